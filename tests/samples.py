"""Samples collector: what a driver thread emits, with bounded waits for a sample to show up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from drivers.samples import GNSSFix, LinkSample, Sample


class SampleCollector:
    """A driver's ``emit`` callback that keeps every sample with the monotonic time it came."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.samples: list[tuple[float, Sample]] = []

    def __call__(self, sample: Sample) -> None:
        with self._cond:
            self.samples.append((time.monotonic(), sample))
            self._cond.notify_all()

    emit = __call__

    def wait_for(
        self, match: Callable[[Sample], bool], timeout_s: float, after: float = 0.0
    ) -> tuple[float, Sample]:
        """The first matching sample that came at or after ``after``: (time, sample)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for t, sample in self.samples:
                    if t >= after and match(sample):
                        return t, sample
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [type(s).__name__ for _, s in self.samples[-10:]]
                    raise AssertionError(
                        f"not seen within {timeout_s} s; links {self.links()}, last {kinds}"
                    )
                self._cond.wait(left)

    def of(self, kind: type, after: float = 0.0) -> list[Sample]:
        with self._cond:
            return [s for t, s in self.samples if isinstance(s, kind) and t >= after]

    def links(self) -> list[tuple[str, str]]:
        return [(s.state.value, s.reason) for _, s in self.samples if isinstance(s, LinkSample)]

    def fixes(self) -> list[GNSSFix]:
        return [s for _, s in self.samples if isinstance(s, GNSSFix)]
