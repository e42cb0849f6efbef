"""Idle detector: idle_start / idle_end with duration and litres burned."""

from __future__ import annotations

from agent.config import IdleDetectSection, MotionDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import Sample


class IdleDetector:
    """Engine running and stationary for ``min_s`` is idling, reported at its onset.

    Idling ends at the onset of a movement that lasts ``end_moving_s`` (creeping forward in a
    queue does not end it) or when the engine stops. Litres burned integrate the ECU's fuel rate
    over the idle period.
    """

    def __init__(self, settings: IdleDetectSection, motion: MotionDetectSection) -> None:
        self._s = settings
        self._gap_s = motion.max_integration_gap_s
        self._since: float | None = None  # onset of the current stationary-with-engine run
        self._active = False
        self._moving_since: float | None = None
        self._fuel_l = 0.0
        self._last_ts: float | None = None
        self._where: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self._active

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        ts = sample.ts_mono
        if self._last_ts is not None and ts < self._last_ts:
            return []
        if (
            self._since is not None
            and self._moving_since is None
            and self._last_ts is not None
            and m.fuel_rate_lph is not None
        ):
            dt = ts - self._last_ts
            if 0 < dt <= self._gap_s:
                self._fuel_l += m.fuel_rate_lph * dt / 3600.0
        self._last_ts = ts
        engine = m.engine_running()
        still = m.stationary()
        if not engine:
            end_ts = m.ignition_ts if m.ignition is False and m.ignition_ts is not None else ts
            return self._end(max(end_ts, self._since or end_ts), m)
        if still is None:
            return []
        if still:
            self._moving_since = None
            if self._since is None:
                self._since, self._fuel_l = ts, 0.0
                self._where = m.position()
            if not self._active and ts - self._since >= self._s.min_s:
                self._active = True
                lat, lon = self._where if self._where is not None else (None, None)
                return [Event(EventType.IDLE_START, self._since, lat, lon, {})]
            return []
        if not self._active:
            self._since = None
            return []
        if self._moving_since is None:
            self._moving_since = ts
        if ts - self._moving_since >= self._s.end_moving_s:
            return self._end(self._moving_since, m)
        return []

    def _end(self, ts: float, m: MotionTracker) -> list[Event]:
        since, active = self._since, self._active
        self._since, self._active, self._moving_since = None, False, None
        if not active or since is None:
            return []
        lat, lon = self._where if self._where is not None else (None, None)
        return [
            Event(
                EventType.IDLE_END,
                ts,
                lat,
                lon,
                {
                    "duration_s": round(max(0.0, ts - since), 1),
                    "fuel_used_l": round(self._fuel_l, 3),
                },
            )
        ]
