"""Clock: the injected source of monotonic and wall time, scalable for simulations."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic scale (scaled in simulations, virtual in replay)."""
        ...

    def wall(self) -> dt.datetime:
        """The system's idea of UTC now (may be wrong on a Pi without RTC until NTP or GNSS)."""
        ...


class SystemClock:
    """Real time, optionally running ``scale`` times faster (x10, x60) for simulated drives.

    Scaled monotonic time starts at the real monotonic reading when the clock is made, so short
    intervals stay comparable with the simulator's scaled time.
    """

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        now = time.monotonic()
        return self._origin + (now - self._origin) * self.scale

    def wall(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class VirtualClock:
    """Time that moves only when told to (replay, tests)."""

    def __init__(self, start_mono: float = 0.0, start_wall: dt.datetime | None = None) -> None:
        self._mono = start_mono
        self._start_mono = start_mono
        self._start_wall = start_wall or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def advance_to(self, mono: float) -> None:
        if mono > self._mono:
            self._mono = mono

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> dt.datetime:
        return self._start_wall + dt.timedelta(seconds=self._mono - self._start_mono)
