"""Motion: the fused view of the van (speed, acceleration, ignition, position) every detector reads.

Fusion rule: OBD speed when a fresh reading exists (the ECU's wheel speed is smooth and immune to
multipath); otherwise GNSS Doppler speed from a fix that passes the quality gate; and when the
ignition is known off the van is parked, whatever the receiver says. Positions are gated too: a
fix that jumps further than the reported speed allows (multipath off buildings, tens of metres
while parked) is rejected, so jitter never moves the van.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from agent.config import IgnitionDetectSection, MotionDetectSection
from agent.geofence import distance_m
from drivers.samples import GNSSFix, IgnitionSample, OBDReading, Sample


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One compact evidence sample."""

    ts_mono: float
    speed_kmh: float | None
    accel_mps2: float | None
    lat: float | None
    lon: float | None
    heading_deg: float | None


class SpeedSource(StrEnum):
    OBD = "obd"
    GNSS = "gnss"
    PARKED = "parked"


class MotionTracker:
    """Fuses samples into speed, acceleration, ignition and a gated position."""

    def __init__(
        self,
        settings: MotionDetectSection,
        ignition: IgnitionDetectSection,
        *,
        accel_window_s: float = 1.0,
        trace_s: float = 12.0,
    ) -> None:
        self._s = settings
        self._ign = ignition
        self._accel_window_s = accel_window_s
        self._trace_s = trace_s
        self.now_s: float | None = None
        self.first_ts: float | None = None  # when the agent started seeing samples
        self.still_since: float | None = None  # onset of the current standstill
        # Ignition: GPIO samples win; without them, RPM; without RPM, charging voltage.
        self.ignition: bool | None = None
        self.ignition_ts: float | None = None
        self.ignition_source = ""
        self._gpio_seen = False
        self._rpm_seen = False
        self._volt_high_since: float | None = None
        self.obd_speed_kmh: float | None = None
        self.obd_speed_ts: float | None = None
        self.rpm: float | None = None
        self.rpm_ts: float | None = None
        self.fuel_rate_lph: float | None = None
        self.fix: GNSSFix | None = None  # last fix that passed the gates
        self.fix_good = False  # whether the newest fix passed the gates
        self.gnss_speed_kmh: float | None = None
        self.gnss_speed_ts: float | None = None
        self.speed_kmh: float | None = None
        self.speed_source: SpeedSource | None = None
        self.speed_updated = False  # the current sample gave a new speed value
        self.accel_mps2: float | None = None
        self.accel_ts: float | None = None  # centre of the window the estimate covers
        self.accel_updated = False
        self._speeds: deque[tuple[float, float]] = deque()
        self._speeds_source: SpeedSource | None = None
        self.trace: deque[TracePoint] = deque()
        self._rejects = 0

    # -- derived predicates -------------------------------------------------------------------
    def obd_fresh(self) -> bool:
        return (
            self.obd_speed_ts is not None
            and self.now_s is not None
            and 0 <= self.now_s - self.obd_speed_ts <= self._s.obd_speed_max_age_s
        )

    def stationary(self) -> bool | None:
        """True below the stationary threshold of the current speed source; None if unknown."""
        if self.speed_kmh is None:
            return None
        if self.speed_source == SpeedSource.GNSS:
            return self.speed_kmh < self._s.stationary_gnss_kmh
        return self.speed_kmh < self._s.stationary_obd_kmh

    def engine_running(self) -> bool:
        if self.ignition is False:
            return False
        if (
            self.rpm is not None
            and self.rpm_ts is not None
            and self.now_s is not None
            and self.now_s - self.rpm_ts <= 5.0
        ):
            return self.rpm > 0
        return self.ignition is True

    def window_max_speed_kmh(self) -> float:
        """The highest speed inside the current acceleration window."""
        return max((v for _, v in self._speeds), default=0.0) * 3.6

    def position(self) -> tuple[float, float] | None:
        return None if self.fix is None else (self.fix.lat, self.fix.lon)

    # -- update -------------------------------------------------------------------------------
    def update(self, sample: Sample) -> None:
        ts = sample.ts_mono
        self.speed_updated = False
        self.accel_updated = False
        if not math.isfinite(ts):
            return
        if self.now_s is None or ts > self.now_s:
            self.now_s = ts
        if self.first_ts is None:
            self.first_ts = ts
        if isinstance(sample, IgnitionSample):
            self._on_ignition(sample)
        elif isinstance(sample, OBDReading):
            self._on_obd(sample)
        elif isinstance(sample, GNSSFix):
            self._on_fix(sample)
        self._fuse(ts)

    def _on_ignition(self, sample: IgnitionSample) -> None:
        if sample.source == "gpio":
            self._gpio_seen = True
        elif self._gpio_seen:
            return
        self._set_ignition(sample.on, sample.ts_mono, sample.source)

    def _set_ignition(self, on: bool, ts: float, source: str) -> None:
        if self.ignition != on:
            self.ignition = on
            self.ignition_ts = ts
            self.ignition_source = source

    def _on_obd(self, r: OBDReading) -> None:
        ts = r.ts_mono
        if (
            r.speed_kmh is not None
            and math.isfinite(r.speed_kmh)
            and 0 <= r.speed_kmh < 400
            and (self.obd_speed_ts is None or ts >= self.obd_speed_ts)
        ):
            self.obd_speed_kmh = r.speed_kmh
            self.obd_speed_ts = ts
        if r.rpm is not None and math.isfinite(r.rpm) and r.rpm >= 0:
            self.rpm, self.rpm_ts = r.rpm, ts
            self._rpm_seen = True
            if not self._gpio_seen and self._ign.rpm_fallback:
                self._set_ignition(r.rpm > 0, ts, "rpm")
        if r.fuel_rate_lph is not None and math.isfinite(r.fuel_rate_lph):
            self.fuel_rate_lph = max(0.0, r.fuel_rate_lph)
        if r.voltage_v is not None and not self._gpio_seen and not self._rpm_seen:
            if r.voltage_v > self._ign.voltage_on_v:
                if self._volt_high_since is None:
                    self._volt_high_since = ts
                if ts - self._volt_high_since >= self._ign.voltage_on_s:
                    self._set_ignition(True, self._volt_high_since, "voltage")
            else:
                self._volt_high_since = None
                self._set_ignition(False, ts, "voltage")

    def _on_fix(self, fix: GNSSFix) -> None:
        if not (math.isfinite(fix.lat) and math.isfinite(fix.lon)):
            self.fix_good = False
            return
        hdop_ok = fix.hdop is None or fix.hdop <= self._s.gnss_max_hdop
        if not hdop_ok:
            self.fix_good = False
            return
        speed_mps = fix.speed_mps if fix.speed_mps is not None and fix.speed_mps >= 0 else None
        last = self.fix
        if last is not None:
            dt = fix.ts_mono - last.ts_mono
            if dt <= 0:
                self.fix_good = False
                return
            jump = distance_m(last.lat, last.lon, fix.lat, fix.lon)
            v = max(speed_mps or 0.0, last.speed_mps or 0.0)
            allowed = v * dt * 1.5 + self._s.max_jump_m
            # After a long gap (tunnel, unplug) or a run of rejections, re-anchor: the van may
            # really be somewhere else now.
            if jump > allowed and dt <= 10.0 and self._rejects < 5:
                self._rejects += 1
                self.fix_good = False
                return
        self._rejects = 0
        self.fix = fix
        self.fix_good = True
        if speed_mps is not None and speed_mps < 100:
            self.gnss_speed_kmh = speed_mps * 3.6
            self.gnss_speed_ts = fix.ts_mono

    def _fuse(self, ts: float) -> None:
        source: SpeedSource | None
        speed: float | None
        if self.obd_fresh():
            source, speed = SpeedSource.OBD, self.obd_speed_kmh
        elif self.ignition is False:
            source, speed = SpeedSource.PARKED, 0.0
        elif (
            self.gnss_speed_ts is not None
            and self.now_s is not None
            and 0 <= self.now_s - self.gnss_speed_ts <= 2.5
        ):
            source, speed = SpeedSource.GNSS, self.gnss_speed_kmh
        else:
            source, speed = None, None
        new_value = (source == SpeedSource.OBD and self.obd_speed_ts == ts) or (
            source == SpeedSource.GNSS and self.gnss_speed_ts == ts
        )
        changed_source = source != self.speed_source
        self.speed_kmh, self.speed_source = speed, source
        still = self.stationary()
        if still is False:
            self.still_since = None
        elif still and self.still_since is None:
            self.still_since = ts
        if source is None or speed is None:
            self._speeds.clear()
            self.accel_mps2 = None
            return
        if changed_source or source != self._speeds_source:
            self._speeds.clear()
            self._speeds_source = source
        if not (new_value or changed_source):
            return
        self.speed_updated = True
        if self._speeds and ts <= self._speeds[-1][0]:
            return
        self._speeds.append((ts, speed / 3.6))
        while self._speeds and ts - self._speeds[0][0] > self._accel_window_s + 1e-9:
            self._speeds.popleft()
        self._estimate_accel()
        fix = self.fix
        self.trace.append(
            TracePoint(
                ts,
                round(speed, 2),
                None if self.accel_mps2 is None else round(self.accel_mps2, 2),
                None if fix is None else round(fix.lat, 6),
                None if fix is None else round(fix.lon, 6),
                None if fix is None or fix.course_deg is None else round(fix.course_deg, 1),
            )
        )
        while self.trace and ts - self.trace[0].ts_mono > self._trace_s:
            self.trace.popleft()

    def _estimate_accel(self) -> None:
        pts = self._speeds
        if len(pts) < 2 or pts[-1][0] - pts[0][0] < min(0.3, self._accel_window_s / 2):
            self.accel_mps2 = None
            return
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        mv = sum(v for _, v in pts) / n
        stt = sum((t - mt) ** 2 for t, _ in pts)
        if stt <= 0:
            self.accel_mps2 = None
            return
        self.accel_mps2 = sum((t - mt) * (v - mv) for t, v in pts) / stt
        self.accel_ts = mt
        self.accel_updated = True
