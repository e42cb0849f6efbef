"""Position reporter: decides which fixes become position records (pure; time from samples).

Rules (ARCHITECTURE.md): while moving, a record every ``moving_interval_s``, or after
``moving_distance_m``, or on a heading change of ``heading_change_deg``; while stopped, every
``stopped_interval_s``; one on every state change (moving <-> stopped, ignition on <-> off), at the
first fix after it. Never more often than ``min_interval_s``; ``min_interval_s = 0`` reports every
fix. Motion comes from the same fused tracker the detectors use, so a parked van's jitter does not
count as moving or as distance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from agent.config import IgnitionDetectSection, MotionDetectSection, ReportSection
from agent.detectors.motion import MotionTracker
from agent.geofence import distance_m
from drivers.samples import FixQuality, GNSSFix, Sample


class ReportReason(StrEnum):
    EVERY_FIX = "every_fix"
    INTERVAL = "interval"
    DISTANCE = "distance"
    HEADING = "heading"
    STOPPED = "stopped"
    STATE_CHANGE = "state_change"  # moving <-> stopped
    IGNITION = "ignition"  # ignition on <-> off
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
    estimated: bool = False  # a dead-reckoning fix (GGA quality 6, RMC mode E), not measured


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
        estimated=fix.quality is FixQuality.ESTIMATED,
    )


class PositionReporter:
    """Feeds every sample to its own motion tracker; returns the fixes worth reporting."""

    def __init__(
        self,
        settings: ReportSection,
        motion: MotionDetectSection | None = None,
        ignition: IgnitionDetectSection | None = None,
    ) -> None:
        self._settings = settings
        self._motion = MotionTracker(
            motion or MotionDetectSection(), ignition or IgnitionDetectSection()
        )
        self._last: Position | None = None
        self._last_at: tuple[float, float] | None = None  # gated position of the last report
        self._last_course: float | None = None
        self._moving: bool | None = None
        self._ignition: bool | None = None
        self._pending: ReportReason | None = None  # a state change waiting for its fix

    @property
    def moving(self) -> bool | None:
        return self._moving

    def feed(self, sample: Sample) -> list[Position]:
        m = self._motion
        m.update(sample)
        still = m.stationary()
        moving = None if still is None else not still
        if moving is not None and moving != self._moving:
            if self._moving is not None:
                self._pending = ReportReason.STATE_CHANGE
            self._moving = moving
        if m.ignition is not None and m.ignition != self._ignition:
            if self._ignition is not None:
                self._pending = ReportReason.IGNITION
            self._ignition = m.ignition
        if not isinstance(sample, GNSSFix):
            return []
        reason = self._reason(sample)
        if reason is None:
            return []
        pos = position_from_fix(sample, reason)
        self._last = pos
        self._pending = None
        self._last_course = sample.course_deg
        if m.fix_good and m.fix is sample:
            self._last_at = (sample.lat, sample.lon)
        return [pos]

    def _reason(self, fix: GNSSFix) -> ReportReason | None:
        s = self._settings
        last = self._last
        if last is None:
            return ReportReason.FIRST
        dt = fix.ts_mono - last.ts_mono
        if dt < 0:
            # Time ran backwards (a new clock base): start over rather than go silent.
            return ReportReason.FIRST
        if s.min_interval_s == 0:
            return self._pending or ReportReason.EVERY_FIX
        if dt < s.min_interval_s:
            return None
        if self._pending is not None:
            return self._pending
        if not self._moving:
            return ReportReason.STOPPED if dt >= s.stopped_interval_s else None
        if dt >= s.moving_interval_s:
            return ReportReason.INTERVAL
        m = self._motion
        if (
            self._last_at is not None
            and m.fix_good
            and m.fix is fix
            and distance_m(*self._last_at, fix.lat, fix.lon) >= s.moving_distance_m
        ):
            return ReportReason.DISTANCE
        if fix.course_deg is not None and self._last_course is not None:
            turn = abs((fix.course_deg - self._last_course + 180.0) % 360.0 - 180.0)
            if turn >= s.heading_change_deg:
                return ReportReason.HEADING
        return None
