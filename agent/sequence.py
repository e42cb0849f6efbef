"""Sequence: the per-device record counter that survives restarts and power cuts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

RESERVE = 128


class SequenceCounter:
    """Hands out ``seq`` numbers that are never handed out twice, across restarts and power cuts.

    The file holds a *ceiling*: every number below it may have been used. Before handing out a
    number at or above the ceiling, the counter raises the ceiling by ``reserve`` and fsyncs it,
    so a restart resumes at the stored ceiling, above everything any earlier run handed out —
    also numbers given to positions that were still in memory at a power cut, whose copies may
    already have gone out on the ``live`` topic. The price is a jump of at most ``reserve``
    unused numbers at each restart, and one small fsync per ``reserve`` records.
    """

    def __init__(self, path: Path, reserve: int = RESERVE) -> None:
        self._path = path
        self._reserve = max(1, reserve)
        self._lock = threading.Lock()
        self._next = self._read()
        self._ceiling = self._next  # nothing reserved by this run yet

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
            if self._next >= self._ceiling:
                self._store(self._next + self._reserve)
            value = self._next
            self._next += 1
            return value

    def bump_to(self, value: int) -> None:
        """Never hand out ``value`` or anything below it (used after reading the spool)."""
        with self._lock:
            if value >= self._next:
                self._next = value + 1

    def persist(self) -> None:
        """Make sure the stored ceiling covers every number handed out (called before commits).

        ``take`` already keeps it so; this also covers ``bump_to`` and is cheap when true.
        """
        with self._lock:
            if self._next > self._ceiling:
                self._store(self._next + self._reserve)

    def _store(self, ceiling: int) -> None:
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{ceiling}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        self._ceiling = ceiling
