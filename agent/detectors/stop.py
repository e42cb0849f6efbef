"""Stop detector: stop_start / stop_end, a delivery stop with its dwell time and place."""

from __future__ import annotations

from agent.config import StopDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import Sample


class StopDetector:
    """Stationary (engine on or off) for ``min_s`` is a stop, reported at its onset.

    It ends at the onset of a movement lasting ``end_moving_s``. The place is the first gated
    fix of the stop, so parked multipath jitter does not drag it around. The standstill the agent
    starts in is not a stop: nobody delivered anything before the van first moved.
    """

    def __init__(self, settings: StopDetectSection) -> None:
        self._s = settings
        self._since: float | None = None
        self._active = False
        self._moving_since: float | None = None
        self._where: tuple[float, float] | None = None
        self._last_ts: float | None = None
        self._has_moved = False

    @property
    def active(self) -> bool:
        return self._active

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        ts = sample.ts_mono
        if self._last_ts is not None and ts < self._last_ts:
            return []
        self._last_ts = ts
        still = m.stationary()
        if still is None:
            return []
        if not still:
            self._has_moved = True
        elif not self._has_moved:
            return []
        if still:
            self._moving_since = None
            if self._since is None:
                self._since = ts
                self._where = m.position()
            if self._where is None:
                self._where = m.position()
            if not self._active and ts - self._since >= self._s.min_s:
                self._active = True
                lat, lon = self._where if self._where is not None else (None, None)
                return [Event(EventType.STOP_START, self._since, lat, lon, {})]
            return []
        if not self._active:
            self._since = None
            return []
        if self._moving_since is None:
            self._moving_since = ts
        if ts - self._moving_since < self._s.end_moving_s:
            return []
        since, end = self._since, self._moving_since
        self._since, self._active, self._moving_since = None, False, None
        lat, lon = self._where if self._where is not None else (None, None)
        dwell = 0.0 if since is None else max(0.0, end - since)
        return [Event(EventType.STOP_END, end, lat, lon, {"dwell_s": round(dwell, 1)})]
