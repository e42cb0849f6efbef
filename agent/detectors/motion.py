"""Motion: the fused view of the van (speed, acceleration, ignition, position) every detector reads.

Fusion rule: OBD speed when a fresh reading exists (the ECU's wheel speed is smooth and immune to
multipath); with the ignition known off the van is parked, whatever the receiver says; otherwise
GNSS Doppler speed, but only once the fixes show physically consistent movement
(:class:`GNSSMotionCheck`): a parked receiver's multipath throws positions tens of metres and
reports a random speed and course, so GNSS says "moving" only when speed, displacement and course
have agreed for a few seconds and metres. Until then GNSS speed reads 0.

Positions are gated too. While the van stands still (by the fused view) it is where it stopped:
fixes further than ``max_jump_m`` from that place (``rest_at``) are rejected, and nothing
re-anchors it during the standstill. While moving, a fix further than the speed allows is
rejected; a run of rejections or a gap re-anchors, since the van may really be elsewhere.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent.config import IgnitionDetectSection, MotionDetectSection
from agent.geofence import EARTH_RADIUS_M, distance_m
from drivers.samples import FixQuality, GNSSFix, IgnitionSample, OBDReading, Sample


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


@dataclass(frozen=True, slots=True)
class GNSSEpoch:
    """What the motion check keeps of a fix."""

    ts_mono: float
    lat: float
    lon: float
    speed_mps: float
    course_deg: float | None


class StepVerdict(StrEnum):
    """What the motion check made of one fix."""

    STILL = "still"  # no evidence of movement (yet): GNSS speed reads 0
    MOVING = "moving"  # consistent with the confirmed movement: its Doppler speed counts
    REJECTED = "rejected"  # inconsistent with the confirmed movement: multipath, ignored


class GNSSMotionCheck:
    """Whether a run of fixes shows a moving van, or a parked receiver's multipath.

    A parked receiver reports positions thrown tens of metres, a Doppler speed of a few m/s and a
    random course, each epoch on its own. A moving van's fixes agree with each other: from one fix
    to the next the displacement matches the distance the two Doppler speeds integrate to, the
    speed changes no faster than a van can (``max_accel_mps2``), the course turns no faster than
    a van steers (``gnss_course_tolerance_deg``) and a long step points along it. Movement is
    confirmed when such a chain, every speed at or above the stationary threshold, spans
    ``gnss_confirm_s`` and ``gnss_confirm_m``, its displacement matches its integrated speed, and
    dead reckoning (speed along the course, integrated) lands where its fixes went. Confirmed
    movement lasts while fixes stay consistent; inconsistent ones are rejected, and
    ``reanchor_rejects`` of them in a row, or a speed below the threshold, end it: the next
    movement must be confirmed afresh.
    """

    def __init__(self, settings: MotionDetectSection) -> None:
        self._s = settings
        self._min_mps = settings.stationary_gnss_kmh / 3.6
        self.moving = False
        self._chain: deque[GNSSEpoch] = deque()
        self._misses = 0
        self.confirmed: tuple[GNSSEpoch, ...] = ()  # the chain that just confirmed movement

    def reset(self) -> None:
        self.moving = False
        self._chain.clear()
        self._misses = 0

    def update(self, e: GNSSEpoch) -> StepVerdict:
        self.confirmed = ()
        chain = self._chain
        if not chain:
            chain.append(e)
            return StepVerdict.STILL
        p = chain[-1]
        dt = e.ts_mono - p.ts_mono
        if dt <= 0:
            return StepVerdict.REJECTED if self.moving else StepVerdict.STILL
        if dt > self._s.gnss_speed_max_age_s:
            # Too long since the last consistent fix to judge continuity: start again.
            self.reset()
            chain.append(e)
            return StepVerdict.STILL
        ok = self._step_ok(p, e, dt)
        if self.moving:
            if not ok:
                self._misses += 1
                if self._misses >= self._s.reanchor_rejects:
                    self.reset()
                    chain.append(e)
                    return StepVerdict.STILL
                return StepVerdict.REJECTED
            self._misses = 0
            if e.speed_mps < self._min_mps:
                self.reset()
                chain.append(e)
                return StepVerdict.STILL
            chain.clear()  # while moving, each fix is judged against the last consistent one
            chain.append(e)
            return StepVerdict.MOVING
        if not ok or e.speed_mps < self._min_mps:
            chain.clear()
            chain.append(e)
            return StepVerdict.STILL
        chain.append(e)
        self._trim()
        if self._confirms():
            self.moving = True
            self.confirmed = tuple(chain)
            return StepVerdict.MOVING
        return StepVerdict.STILL

    def _trim(self) -> None:
        """Drop the oldest fixes the confirmation no longer needs (bounds the chain)."""
        chain, s = self._chain, self._s
        while len(chain) > 2:
            rest = list(chain)[1:]
            if (
                rest[-1].ts_mono - rest[0].ts_mono < s.gnss_confirm_s
                or _integrated_m(rest) < s.gnss_confirm_m
            ):
                return
            chain.popleft()

    def _confirms(self) -> bool:
        chain, s = list(self._chain), self._s
        first, last = chain[0], chain[-1]
        if last.ts_mono - first.ts_mono < s.gnss_confirm_s:
            return False
        travelled = _integrated_m(chain)
        if travelled < s.gnss_confirm_m:
            return False
        moved = distance_m(first.lat, first.lon, last.lat, last.lon)
        if abs(moved - travelled) > self._tolerance_m(travelled):
            return False
        # Dead reckoning: Doppler speed along the reported course, integrated, must land where
        # the fixes went (through a turn too: both follow the arc).
        reckoned = _reckoned_m(chain)
        if reckoned is None:
            return True  # no course reported: nothing to contradict the displacement
        east, north = _offset_m(first, last)
        miss = math.hypot(east - reckoned[0], north - reckoned[1])
        return miss <= self._tolerance_m(travelled)

    def _step_ok(self, p: GNSSEpoch, e: GNSSEpoch, dt: float) -> bool:
        s = self._s
        if abs(e.speed_mps - p.speed_mps) > s.max_accel_mps2 * dt:
            return False
        expected = (p.speed_mps + e.speed_mps) / 2 * dt
        moved = distance_m(p.lat, p.lon, e.lat, e.lon)
        if abs(moved - expected) > self._tolerance_m(expected):
            return False
        if p.course_deg is None or e.course_deg is None:
            return True
        # A van turns no faster than its steering allows; a parked receiver's course is random.
        if _angle_deg(p.course_deg, e.course_deg) > s.gnss_course_tolerance_deg:
            return False
        # Over one step the direction means something only when the step is longer than the
        # position noise (at 1 Hz and speed; at 10 Hz the window check decides).
        if moved >= 2 * s.gnss_tolerance_m:
            east, north = _offset_m(p, e)
            bearing = math.degrees(math.atan2(east, north))
            mean = _mean_course_deg(p.course_deg, e.course_deg)
            return _angle_deg(bearing, mean) <= s.gnss_course_tolerance_deg
        return True

    def _tolerance_m(self, travelled_m: float) -> float:
        return self._s.gnss_tolerance_m + self._s.gnss_tolerance_pct / 100.0 * travelled_m


def _integrated_m(chain: Sequence[GNSSEpoch]) -> float:
    return sum(
        (a.speed_mps + b.speed_mps) / 2 * (b.ts_mono - a.ts_mono)
        for a, b in itertools.pairwise(chain)
    )


def _angle_deg(a: float, b: float) -> float:
    return abs((b - a + 180.0) % 360.0 - 180.0)


def _mean_course_deg(a: float, b: float) -> float:
    return a + ((b - a + 180.0) % 360.0 - 180.0) / 2


def _offset_m(a: GNSSEpoch, b: GNSSEpoch) -> tuple[float, float]:
    """(east, north) metres from a to b."""
    north = math.radians(b.lat - a.lat) * EARTH_RADIUS_M
    east = math.radians(b.lon - a.lon) * EARTH_RADIUS_M * math.cos(math.radians(a.lat))
    return east, north


def _reckoned_m(chain: Sequence[GNSSEpoch]) -> tuple[float, float] | None:
    """(east, north) metres the Doppler speeds and courses integrate to, or None without course."""
    east = north = 0.0
    for a, b in itertools.pairwise(chain):
        if a.course_deg is None or b.course_deg is None:
            return None
        step = (a.speed_mps + b.speed_mps) / 2 * (b.ts_mono - a.ts_mono)
        course = math.radians(_mean_course_deg(a.course_deg, b.course_deg))
        east += step * math.sin(course)
        north += step * math.cos(course)
    return east, north


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
        # Where the current standstill began: a standing van is there, whatever the fixes say.
        self.rest_at: tuple[float, float] | None = None
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
        self.gnss = GNSSMotionCheck(settings)
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
        self._seed: tuple[GNSSEpoch, ...] = ()  # confirmed GNSS movement to backfill speeds
        self.trace: deque[TracePoint] = deque()
        self._rejects = 0
        self._last_fix_ts: float | None = None  # newest fix that passed the quality gate
        self._unknown_since: float | None = None  # onset of the current spell without speed

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
            and self.now_s - self.rpm_ts <= self._s.rpm_max_age_s
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
        self.fix_good = False
        if not (math.isfinite(fix.lat) and math.isfinite(fix.lon)):
            return
        if fix.hdop is not None and not fix.hdop <= self._s.gnss_max_hdop:
            return
        if fix.quality is FixQuality.ESTIMATED and not self._s.use_estimated_fixes:
            return  # extrapolated, not measured: no trip, speeding or harsh event from it
        if self._last_fix_ts is not None and fix.ts_mono <= self._last_fix_ts:
            return  # time ran backwards or repeated: positions and speeds need order
        self._last_fix_ts = fix.ts_mono
        v = fix.speed_mps
        speed_mps = v if v is not None and math.isfinite(v) and 0 <= v < 100 else None
        course = (
            fix.course_deg
            if fix.course_deg is not None and math.isfinite(fix.course_deg)
            else None
        )
        verdict: StepVerdict | None = None
        if speed_mps is None:
            self.gnss.reset()
        else:
            verdict = self.gnss.update(GNSSEpoch(fix.ts_mono, fix.lat, fix.lon, speed_mps, course))
            self._seed = self.gnss.confirmed
            if verdict == StepVerdict.MOVING:
                self.gnss_speed_kmh, self.gnss_speed_ts = speed_mps * 3.6, fix.ts_mono
            elif verdict == StepVerdict.STILL:
                # No evidence of movement: a parked receiver's Doppler speed is noise.
                self.gnss_speed_kmh, self.gnss_speed_ts = 0.0, fix.ts_mono
        if self._standing(verdict):
            self._gate_standing(fix)
        elif verdict is not None and not self.obd_fresh() and self.ignition is not False:
            # GNSS alone says the van moves: the motion check has judged this very fix.
            if verdict == StepVerdict.MOVING:
                self._accept(fix)
        else:
            self._gate_moving(fix, speed_mps)

    def _standing(self, verdict: StepVerdict | None) -> bool:
        """Whether the van stands still by its most trusted source, as of this fix."""
        if self.obd_fresh():
            speed = self.obd_speed_kmh or 0.0
            return speed < self._s.stationary_obd_kmh
        if self.ignition is False:
            return True
        return verdict == StepVerdict.STILL

    def _gate_standing(self, fix: GNSSFix) -> None:
        # A standing van is where it stopped: a fix further away is multipath, and no run of
        # such fixes moves it (multipath off a wall can persist for minutes).
        if self.rest_at is None:
            # The first fix of the standstill is checked against the last fix while moving,
            # if that is recent: at 1 Hz the van may have rolled a few metres since, so that
            # fix itself is not the place, but a jump from it is multipath.
            last = self.fix
            recent = last is not None and fix.ts_mono - last.ts_mono <= self._s.gnss_speed_max_age_s
            if (
                last is not None
                and recent
                and distance_m(last.lat, last.lon, fix.lat, fix.lon) > self._s.max_jump_m
            ):
                return
            self.rest_at = (fix.lat, fix.lon)
        if distance_m(*self.rest_at, fix.lat, fix.lon) <= self._s.max_jump_m:
            self._accept(fix)

    def _gate_moving(self, fix: GNSSFix, speed_mps: float | None) -> None:
        last = self.fix
        if last is not None:
            dt = fix.ts_mono - last.ts_mono
            jump = distance_m(last.lat, last.lon, fix.lat, fix.lon)
            obd_mps = (self.obd_speed_kmh or 0.0) / 3.6 if self.obd_fresh() else 0.0
            v = max(speed_mps or 0.0, last.speed_mps or 0.0, obd_mps)
            allowed = v * dt * self._s.jump_speed_factor + self._s.max_jump_m
            # After a long gap (tunnel, unplug) or a run of rejections, re-anchor: the van may
            # really be somewhere else now.
            if (
                jump > allowed
                and dt <= self._s.reanchor_gap_s
                and self._rejects < self._s.reanchor_rejects
            ):
                self._rejects += 1
                return
        self._accept(fix)

    def _accept(self, fix: GNSSFix) -> None:
        self._rejects = 0
        self.fix = fix
        self.fix_good = True

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
            and 0 <= self.now_s - self.gnss_speed_ts <= self._s.gnss_speed_max_age_s
        ):
            source, speed = SpeedSource.GNSS, self.gnss_speed_kmh
        else:
            source, speed = None, None
        new_value = (source == SpeedSource.OBD and self.obd_speed_ts == ts) or (
            source == SpeedSource.GNSS and self.gnss_speed_ts == ts
        )
        changed_source = source != self.speed_source
        self.speed_kmh, self.speed_source = speed, source
        seed, self._seed = self._seed, ()
        still = self.stationary()
        if still is None and self._unknown_since is None:
            self._unknown_since = ts
        elif still is not None:
            self._unknown_since = None
        # The standstill's place holds through a short spell without any speed (a few bad
        # fixes); after a longer one the van may have been driven away meanwhile.
        if still is False or (
            self._unknown_since is not None and ts - self._unknown_since > self._s.reanchor_gap_s
        ):
            self.rest_at = None
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
        if seed and source == SpeedSource.GNSS:
            # GNSS movement was just confirmed: until now its speed read 0. The speeds of the
            # confirming fixes are real, so acceleration is estimated from them, not from a
            # step from 0 (which would look like a harsh start).
            self._speeds.clear()
            self._speeds.extend((e.ts_mono, e.speed_mps) for e in seed[:-1] if e.ts_mono < ts)
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
