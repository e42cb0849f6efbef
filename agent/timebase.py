"""Time base: turns sample monotonic times into record timestamps (GNSS UTC when known)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from agent.clock import Clock
from drivers.samples import GNSSFix, Sample


class TimeSource(StrEnum):
    GNSS = "gnss"
    SYSTEM = "system"


class TimeBase:
    """Anchors monotonic time to UTC.

    Once a valid fix arrives, record times are the fix's UTC plus the monotonic time elapsed
    since it, so a wrong system clock (no RTC, NTP not yet synced) or a clock jump never reaches
    the records. Until then, the system clock is used and records say ``time_source: system``.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._anchor_mono: float | None = None
        self._anchor_utc: dt.datetime | None = None

    def observe(self, sample: Sample) -> None:
        if isinstance(sample, GNSSFix):
            self._anchor_mono = sample.ts_mono
            self._anchor_utc = sample.utc

    @property
    def source(self) -> TimeSource:
        return TimeSource.GNSS if self._anchor_utc is not None else TimeSource.SYSTEM

    def utc(self, ts_mono: float) -> tuple[dt.datetime, TimeSource]:
        if self._anchor_utc is not None and self._anchor_mono is not None:
            return (
                self._anchor_utc + dt.timedelta(seconds=ts_mono - self._anchor_mono),
                TimeSource.GNSS,
            )
        now_mono = self._clock.monotonic()
        return (
            self._clock.wall() - dt.timedelta(seconds=now_mono - ts_mono),
            TimeSource.SYSTEM,
        )


def iso(ts: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-20T10:00:00.125Z."""
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
