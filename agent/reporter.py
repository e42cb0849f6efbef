"""Position reporter: decides which fixes become position records (pure; time from samples)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from agent.config import ReportSection
from drivers.samples import GNSSFix, Sample


class ReportReason(StrEnum):
    EVERY_FIX = "every_fix"
    INTERVAL = "interval"
    DISTANCE = "distance"
    HEADING = "heading"
    STOPPED = "stopped"
    STATE_CHANGE = "state_change"
    FIRST = "first"


@dataclass(frozen=True, slots=True)
class Position:
    """One position record, before it gets its envelope (seq, ts, boot_id)."""

    ts_mono: float
    utc: dt.datetime
    lat: float
    lon: float
    alt_m: float | None
    speed_kmh: float | None
    course_deg: float | None
    hdop: float | None
    sats: int | None
    reason: ReportReason


def position_from_fix(fix: GNSSFix, reason: ReportReason) -> Position:
    return Position(
        ts_mono=fix.ts_mono,
        utc=fix.utc,
        lat=fix.lat,
        lon=fix.lon,
        alt_m=fix.alt_m,
        speed_kmh=None if fix.speed_mps is None else fix.speed_mps * 3.6,
        course_deg=fix.course_deg,
        hdop=fix.hdop,
        sats=fix.sats,
        reason=reason,
    )


class PositionReporter:
    """Minimal reporter: every fix, at most one per ``min_interval_s``."""

    def __init__(self, settings: ReportSection) -> None:
        self._settings = settings
        self._last_ts: float | None = None

    def feed(self, sample: Sample) -> list[Position]:
        if not isinstance(sample, GNSSFix):
            return []
        if self._last_ts is None:
            self._last_ts = sample.ts_mono
            return [position_from_fix(sample, ReportReason.FIRST)]
        if sample.ts_mono - self._last_ts < self._settings.min_interval_s:
            return []
        self._last_ts = sample.ts_mono
        return [position_from_fix(sample, ReportReason.EVERY_FIX)]
