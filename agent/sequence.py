"""Sequence: the per-device record counter that survives restarts and power cuts."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class SequenceCounter:
    """Hands out ``seq`` numbers; persists the next one before any record using it is committed.

    The spool calls :meth:`persist` before each commit, so after a power cut the counter resumes
    above every committed record. Numbers handed to positions still waiting in memory at the
    cut are lost with them: that gap is bounded by ``spool.flush_interval_s``.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._next = self._read()
        self._persisted = self._next

    def _read(self) -> int:
        try:
            text = self._path.read_text().strip()
        except FileNotFoundError:
            return 1
        try:
            value = int(text)
        except ValueError:
            # A torn write cannot happen (we rename into place), so this is outside damage.
            # Restarting from 1 would collide with delivered records: refuse loudly instead.
            raise ValueError(f"{self._path}: corrupt sequence file ({text[:20]!r})") from None
        return max(value, 1)

    @property
    def next_value(self) -> int:
        return self._next

    @property
    def last_value(self) -> int:
        """The newest number handed out (0 before the first)."""
        return self._next - 1

    def take(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value

    def bump_to(self, value: int) -> None:
        """Never hand out ``value`` or anything below it (used after reading the spool)."""
        with self._lock:
            if value >= self._next:
                self._next = value + 1

    def persist(self) -> None:
        with self._lock:
            target = self._next
        if self._persisted == target:
            return
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{target}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        self._persisted = target
