"""Harsh-driving detector: harsh_accel, harsh_brake and harsh_turn, with severity."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from agent.config import HarshDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import GNSSFix, Sample


@dataclass(slots=True)
class _Run:
    """A run of consecutive estimates beyond a threshold."""

    start_ts: float
    last_ts: float
    peak: float
    speed_kmh: float
    max_speed_kmh: float
    lat: float | None
    lon: float | None


class HarshDetector:
    """Acceleration from the least-squares slope of fused speed over ``accel_window_s``.

    Differentiating raw positions amplifies multipath into huge accelerations, so only speed is
    differentiated: OBD wheel speed (2 Hz, 1 km/h steps, smoothed by the window) or GNSS Doppler
    speed. A run beyond the threshold counts once it has lasted ``min_duration_s`` (from its first
    estimate to its first estimate back inside). Turns use lateral = v * dheading/dt from GNSS
    course between consecutive good fixes (HDOP <= ``turn_max_hdop``).
    """

    def __init__(self, settings: HarshDetectSection) -> None:
        self._s = settings
        self._accel: _Run | None = None
        self._brake: _Run | None = None
        self._turn: _Run | None = None
        self._fixes: deque[GNSSFix] = deque()  # good fixes of the last heading-rate window
        self._last_accel_ts: float | None = None
        self._turn_dir = ""

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        out: list[Event] = []
        if (
            m.accel_updated
            and m.accel_mps2 is not None
            and m.accel_ts is not None
            and (self._last_accel_ts is None or m.accel_ts > self._last_accel_ts)
        ):
            self._last_accel_ts = m.accel_ts
            out += self._longitudinal(m.accel_ts, m.accel_mps2, m)
        if m.speed_source is None:
            # No speed at all (both links lost): close open runs without judging them.
            self._accel = self._brake = None
        if isinstance(sample, GNSSFix):
            out += self._lateral(sample, m)
        return out

    def _longitudinal(self, ts: float, accel: float, m: MotionTracker) -> list[Event]:
        s = self._s
        speed = m.speed_kmh or 0.0
        out: list[Event] = []
        self._accel, ev = self._step(self._accel, ts, accel, accel >= s.accel_mps2, speed, m)
        if ev is not None and ev.speed_kmh >= s.min_speed_kmh:
            out.append(self._emit(EventType.HARSH_ACCEL, ev, ts))
        self._brake, ev = self._step(self._brake, ts, accel, accel <= s.brake_mps2, speed, m)
        if ev is not None and ev.speed_kmh >= s.min_speed_kmh:
            out.append(self._emit(EventType.HARSH_BRAKE, ev, ts))
        return out

    def _step(
        self,
        run: _Run | None,
        ts: float,
        value: float,
        beyond: bool,
        speed: float,
        m: MotionTracker,
    ) -> tuple[_Run | None, _Run | None]:
        """Advance a run; return (the open run, a finished run long enough to report)."""
        if beyond:
            if run is None:
                pos = m.position()
                # "At >= 10 km/h": the van was that fast somewhere in the window the first
                # estimate covers (for braking its start, for accelerating its end).
                start_speed = m.window_max_speed_kmh()
                return (
                    _Run(
                        ts,
                        ts,
                        value,
                        start_speed,
                        max(speed, start_speed),
                        None if pos is None else pos[0],
                        None if pos is None else pos[1],
                    ),
                    None,
                )
            run.last_ts = ts
            run.peak = max(run.peak, value) if value > 0 else min(run.peak, value)
            run.max_speed_kmh = max(run.max_speed_kmh, speed)
            return run, None
        if run is None:
            return None, None
        if ts - run.start_ts >= self._s.min_duration_s - 1e-9:
            run.last_ts = ts
            return None, run
        return None, None

    def _lateral(self, fix: GNSSFix, m: MotionTracker) -> list[Event]:
        s = self._s
        good = (
            m.fix_good
            and fix.course_deg is not None
            and fix.hdop is not None
            and fix.hdop <= s.turn_max_hdop
        )
        if not good:
            self._fixes.clear()
            return self._close_turn(fix.ts_mono)
        if self._fixes and fix.ts_mono <= self._fixes[-1].ts_mono:
            return []
        self._fixes.append(fix)
        # Heading rate over at least turn_min_span_s (and one acceleration window), not between
        # consecutive fixes: at 10 Hz a degree of course noise per epoch reads as 0.17 rad/s.
        span = max(s.accel_window_s, s.turn_min_span_s)
        while len(self._fixes) > 2 and fix.ts_mono - self._fixes[1].ts_mono >= span - 1e-6:
            self._fixes.popleft()
        prev = self._fixes[0]
        dt = fix.ts_mono - prev.ts_mono
        if dt < span - 1e-6:
            return []
        if dt > 2.0 * span + 1.0 or prev.course_deg is None or fix.course_deg is None:
            self._fixes.clear()
            self._fixes.append(fix)
            return self._close_turn(fix.ts_mono)
        speed_kmh = m.speed_kmh if m.speed_kmh is not None else 0.0
        dheading = (fix.course_deg - prev.course_deg + 180.0) % 360.0 - 180.0
        lateral = (speed_kmh / 3.6) * math.radians(abs(dheading)) / dt
        if lateral >= s.turn_mps2 and speed_kmh >= s.turn_min_speed_kmh:
            if self._turn is None:
                self._turn = _Run(
                    prev.ts_mono, fix.ts_mono, lateral, speed_kmh, speed_kmh, fix.lat, fix.lon
                )
                self._turn_dir = "left" if dheading < 0 else "right"
            else:
                self._turn.last_ts = fix.ts_mono
                self._turn.peak = max(self._turn.peak, lateral)
            return []
        return self._close_turn(prev.ts_mono)

    def _close_turn(self, end_ts: float) -> list[Event]:
        run, self._turn = self._turn, None
        if run is None or run.last_ts - run.start_ts < self._s.min_duration_s - 1e-9:
            return []
        event = self._emit(EventType.HARSH_TURN, run, run.last_ts)
        return [
            Event(
                event.type,
                event.ts_mono,
                event.lat,
                event.lon,
                {**event.data, "direction": self._turn_dir},
            )
        ]

    def _emit(self, etype: EventType, run: _Run, end_ts: float) -> Event:
        data: dict[str, object] = {
            "peak_mps2": round(run.peak, 2),
            "duration_s": round(max(0.0, run.last_ts - run.start_ts), 2),
            "speed_kmh": round(run.speed_kmh, 1),
            "severity": self._severity(etype, run.peak),
        }
        return Event(etype, run.start_ts, run.lat, run.lon, data)

    def _severity(self, etype: EventType, peak: float) -> int:
        if etype == EventType.HARSH_BRAKE:
            bands = sorted(self._s.brake_bands_mps2, reverse=True)  # -3, -4, -5
            return max(1, sum(1 for b in bands if peak <= b))
        base = self._s.accel_mps2 if etype == EventType.HARSH_ACCEL else self._s.turn_mps2
        # Same spacing as the braking bands: +1 m/s^2 per band above the threshold.
        return 1 + min(2, int(max(0.0, abs(peak) - base)))
