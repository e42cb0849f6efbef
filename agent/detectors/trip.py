"""Trip detector: trip_start / trip_end with distance, fuel, idle, event counts and eco score."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config import MotionDetectSection, TripDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from agent.geofence import distance_m
from drivers.samples import Sample

COUNTED = (
    EventType.HARSH_ACCEL,
    EventType.HARSH_BRAKE,
    EventType.HARSH_TURN,
    EventType.SPEEDING_START,
)


def eco_score(
    distance_km: float, duration_s: float, idle_s: float, counts: dict[str, int]
) -> float:
    """100 minus 2 points per driving event per 100 km, minus half the idle share in percent.

    Driving events are harsh_accel, harsh_brake, harsh_turn and speeding episodes; the distance is
    floored at 1 km so a short hop with one event is not scored as hundreds per 100 km.
    """
    events = sum(counts.get(t.value, 0) for t in COUNTED)
    per_100km = 100.0 * events / max(distance_km, 1.0)
    idle_pct = 100.0 * idle_s / duration_s if duration_s > 0 else 0.0
    return round(max(0.0, 100.0 - 2.0 * per_100km - idle_pct / 2.0), 1)


@dataclass(slots=True)
class _Trip:
    start_ts: float
    start_at: tuple[float, float] | None
    distance_m: float = 0.0
    fuel_l: float = 0.0
    max_speed_kmh: float = 0.0
    idle_s: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: {t.value: 0 for t in COUNTED})


class TripDetector:
    """A trip starts with ignition on and movement; it ends after ignition off for a while.

    Start: ignition on and (fused speed above ``start_speed_kmh`` for ``start_confirm_s``, or
    ``start_distance_m`` of gated displacement since ignition on); the event time is the onset of
    that movement. End: ignition off for ``end_ignition_off_s`` within a standstill of at least
    ``min_stop_s``; the event time is the ignition off. Shorter offs (a stall) and shorter stops
    (a quick delivery with the key turned) do not split the trip.
    Distance and fuel integrate the fused speed and the ECU's fuel rate.
    """

    def __init__(self, settings: TripDetectSection, motion: MotionDetectSection) -> None:
        self._s = settings
        self._gap_s = motion.max_integration_gap_s
        self._trip: _Trip | None = None
        self._moving_since: float | None = None
        self._anchor: tuple[float, float] | None = None  # position at ignition on
        self._off_since: float | None = None
        self._last_ts: float | None = None
        self._last_speed_kmh: float | None = None

    @property
    def active(self) -> bool:
        return self._trip is not None

    def observe(self, events: list[Event]) -> None:
        """Count the driving events and idle time that happened during the trip."""
        trip = self._trip
        if trip is None:
            return
        for e in events:
            if e.type.value in trip.counts:
                trip.counts[e.type.value] += 1
            elif e.type == EventType.IDLE_END:
                trip.idle_s += float(e.data.get("duration_s", 0.0))

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        ts = sample.ts_mono
        if self._last_ts is not None and ts < self._last_ts:
            return []
        dt = 0.0 if self._last_ts is None else ts - self._last_ts
        self._last_ts = ts
        out: list[Event] = []
        trip = self._trip
        if trip is not None and 0 < dt <= self._gap_s:
            if self._last_speed_kmh is not None:
                trip.distance_m += self._last_speed_kmh / 3.6 * dt
            if m.fuel_rate_lph is not None and m.engine_running():
                trip.fuel_l += m.fuel_rate_lph * dt / 3600.0
        self._last_speed_kmh = m.speed_kmh
        if trip is not None and m.speed_kmh is not None:
            trip.max_speed_kmh = max(trip.max_speed_kmh, m.speed_kmh)
        if m.ignition is False:
            self._moving_since = None
            self._anchor = None
            if trip is not None:
                if self._off_since is None:
                    self._off_since = m.ignition_ts if m.ignition_ts is not None else ts
                out += self.tick(ts, m)
            return out
        self._off_since = None
        if m.ignition is not True or trip is not None:
            return out
        pos = m.position()
        if self._anchor is None and pos is not None and m.fix_good:
            self._anchor = pos
        speed = m.speed_kmh
        if speed is not None and speed > self._s.start_speed_kmh:
            if self._moving_since is None:
                self._moving_since = ts
            held = ts - self._moving_since >= self._s.start_confirm_s
            start = self._moving_since if held else None
        else:
            self._moving_since = None
            start = None
        # Displacement counts only when no speed is known at all: a known speed (OBD at zero)
        # outranks positions, which multipath can throw 100 m while the van stands still.
        if (
            start is None
            and speed is None
            and self._anchor is not None
            and pos is not None
            and m.fix_good
            and distance_m(*self._anchor, *pos) >= self._s.start_distance_m
        ):
            start = ts
        if start is not None:
            self._trip = _Trip(start, pos)
            lat, lon = pos if pos is not None else (None, None)
            out.append(Event(EventType.TRIP_START, start, lat, lon, {}))
        return out

    def tick(self, now_s: float, m: MotionTracker) -> list[Event]:
        trip, off = self._trip, self._off_since
        if trip is None or off is None or now_s - off < self._s.end_ignition_off_s:
            return []
        still = m.still_since
        if still is None or now_s - still < self._s.min_stop_s:
            return []
        self._trip, self._off_since = None, None
        duration = max(0.0, off - trip.start_ts)
        km = trip.distance_m / 1000.0
        pos = m.position()
        data: dict[str, object] = {
            "distance_km": round(km, 3),
            "duration_s": round(duration, 1),
            "fuel_used_l": round(trip.fuel_l, 3),
            "max_speed_kmh": round(trip.max_speed_kmh, 1),
            "idle_time_s": round(trip.idle_s, 1),
            "event_counts": dict(trip.counts),
            "eco_score": eco_score(km, duration, trip.idle_s, trip.counts),
        }
        if trip.start_at is not None:
            data["start_lat"], data["start_lon"] = trip.start_at
        lat, lon = pos if pos is not None else (None, None)
        return [Event(EventType.TRIP_END, off, lat, lon, data)]
