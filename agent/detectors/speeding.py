"""Speeding detector: speeding_start / speeding_end against the global or a geofence's limit."""

from __future__ import annotations

from agent.config import SpeedingDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from agent.geofence import GeofenceSet
from drivers.samples import Sample


class SpeedingDetector:
    """Above the limit for ``min_s`` is speeding (from its onset); below limit - hysteresis ends it.

    The limit is the lowest ``speed_limit_kmh`` of the geofences holding the van, else the global
    one. Speed is the fused speed, so a parked van's GNSS jitter never counts: ignition off or
    OBD at zero outrank it, and GNSS alone counts only once the motion check confirms movement.
    """

    def __init__(self, settings: SpeedingDetectSection, fences: GeofenceSet) -> None:
        self._s = settings
        self._fences = fences
        self._since: float | None = None  # onset of the current over-limit run
        self._active = False
        self._max_kmh = 0.0
        self._limit_kmh = settings.limit_kmh
        self._last_ts: float | None = None

    def limit_kmh(self, m: MotionTracker) -> float:
        pos = m.position()
        if pos is None:
            return self._s.limit_kmh
        fence_limit = self._fences.speed_limit_kmh(*pos) if self._fences.fences else None
        return self._s.limit_kmh if fence_limit is None else fence_limit

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        ts = sample.ts_mono
        if self._active and m.ignition is False:
            return self._end(ts, m)
        if not m.speed_updated or m.speed_kmh is None:
            return []
        if self._last_ts is not None and ts < self._last_ts:
            return []
        self._last_ts = ts
        speed = m.speed_kmh
        if self._active:
            self._max_kmh = max(self._max_kmh, speed)
            if speed < self._limit_kmh - self._s.hysteresis_kmh:
                return self._end(ts, m)
            return []
        limit = self.limit_kmh(m)
        if speed <= limit:
            self._since = None
            return []
        if self._since is None:
            self._since, self._max_kmh, self._limit_kmh = ts, speed, limit
        self._max_kmh = max(self._max_kmh, speed)
        self._limit_kmh = min(self._limit_kmh, limit)
        if ts - self._since < self._s.min_s:
            return []
        self._active = True
        pos = m.position()
        return [
            Event(
                EventType.SPEEDING_START,
                self._since,
                None if pos is None else pos[0],
                None if pos is None else pos[1],
                {"limit_kmh": self._limit_kmh, "speed_kmh": round(speed, 1)},
            )
        ]

    def _end(self, ts: float, m: MotionTracker) -> list[Event]:
        assert self._since is not None
        since = self._since
        self._active, self._since = False, None
        pos = m.position()
        return [
            Event(
                EventType.SPEEDING_END,
                ts,
                None if pos is None else pos[0],
                None if pos is None else pos[1],
                {
                    "limit_kmh": self._limit_kmh,
                    "max_speed_kmh": round(self._max_kmh, 1),
                    "duration_s": round(max(0.0, ts - since), 1),
                },
            )
        ]
