"""Vehicle model: a diesel delivery van driven along a scenario's route, sampled every 0.1 s.

The whole drive is computed once, deterministically, from the scenario: kinematics first (a speed
profile along the route that respects acceleration, braking and cornering limits), then the
engine (gear, RPM, load, fuel, air, coolant, battery) from the kinematics. Nothing depends on
wall-clock time, so a drive at x60 is the same drive as at x1; ``LiveVehicle`` only chooses which
instant of it the devices see now.

Engine physics (a 2.0 L turbodiesel panel van, 2.6 t loaded):
- road load P = (m a + m g Crr + 0.5 rho CdA v^2) v, drivetrain efficiency 0.9, 1 kW accessories;
- friction power 2.7 kW x rpm / 800; fuel = 0.27 L per indicated kWh (about 225 g/kWh), which
  gives 1.0 L/h at a warm idle (1.14 L/h at the 950 rpm cold idle);
- MAF by speed-density (2.0 L, volumetric efficiency 0.9, MAP from a boost map), raised where
  needed so the air-fuel ratio never drops below 17 (the smoke limiter); lean at idle (AFR ~60);
- throttle position from the driver's power demand, oil temperature lagging the coolant, and the
  distance since the trouble codes were last cleared (a scenario's ``clear = "all"``).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import time
from dataclasses import dataclass

from simulator.scenario import DTCChange, Interval, Scenario, Step, StepKind
from simulator.state import VehicleState

DT_S = 0.1  # model sample period
MAX_ROUTE_KM = 300.0  # a day's delivery round; longer is a typo in the waypoints
MAX_DURATION_S = 86400.0
EARTH_RADIUS_M = 6_371_000.0
MASS_KG = 2600.0
ROLLING_RESISTANCE = 0.011
DRAG_AREA_M2 = 0.95  # Cd 0.35 x frontal area 2.7 m^2
AIR_DENSITY_KGPM3 = 1.2
GRAVITY_MPS2 = 9.81
DRIVETRAIN_EFFICIENCY = 0.9
ACCESSORY_KW = 1.0
FUEL_L_PER_KWH = 0.27
DIESEL_G_PER_L = 835.0
DISPLACEMENT_L = 1.996
VOLUMETRIC_EFFICIENCY = 0.9
MIN_AFR = 17.0
BARO_KPA = 101.3
WARM_IDLE_RPM = 800.0
COLD_IDLE_RPM = 950.0
COOLANT_TARGET_C = 88.0
# Oil runs a few degrees above the coolant, more under load, and follows it more slowly (its
# time constant is OIL_LAG times the coolant's: warm after 15-20 minutes, not 5-10).
OIL_ABOVE_COOLANT_C = 3.0
OIL_LOAD_RISE_C = 10.0
OIL_LAG = 1.5
# An absolute throttle position sensor reads about 15 % with the pedal up and about 90 % wide
# open; on this diesel it follows the pedal, i.e. the power the driver asks for.
THROTTLE_CLOSED_PCT = 15.0
THROTTLE_OPEN_PCT = 90.0
# Upshift speeds (km/h) and engine rpm per km/h in each gear of a six-speed manual van.
GEAR_UPSHIFT_KMH = (0.0, 16.0, 30.0, 48.0, 66.0, 86.0)
GEAR_RPM_PER_KMH = (105.0, 60.0, 40.0, 30.0, 24.5, 20.5)


class RouteError(ValueError):
    """The plan asks for more road than the route has."""


@dataclass(frozen=True, slots=True)
class _Piece:
    s0_m: float
    length_m: float
    x0_m: float
    y0_m: float
    phi0_rad: float  # direction of travel, mathematical angle (east = 0, counter-clockwise)
    curvature_per_m: float  # 0 on straights; signed, positive turning left


@dataclass(frozen=True, slots=True)
class RoutePoint:
    lat: float
    lon: float
    alt_m: float
    course_deg: float  # compass course, clockwise from north
    curvature_per_m: float  # signed, positive turning left


class Route:
    """The road: the scenario's polyline with each corner rounded to an arc (a drivable path)."""

    def __init__(self, waypoints: tuple[tuple[float, float, float], ...], corner_radius_m: float):
        self._lat0 = waypoints[0][0]
        self._lon0 = waypoints[0][1]
        self._cos_lat0 = math.cos(math.radians(self._lat0))
        points = [self._to_xy(lat, lon) for lat, lon, _ in waypoints]
        # Drop repeated points: a zero-length leg has no direction.
        kept = [0]
        for i in range(1, len(points)):
            if math.dist(points[i], points[kept[-1]]) > 0.5:
                kept.append(i)
        if len(kept) < 2:
            raise RouteError("route has no length")
        points = [points[i] for i in kept]
        alts = [waypoints[i][2] for i in kept]
        self._pieces: list[_Piece] = []
        self._alt_s: list[float] = [0.0]
        self._alts = alts
        s = 0.0
        start = points[0]
        for i in range(1, len(points)):
            a, b = points[i - 1], points[i]
            leg = math.dist(a, b)
            phi_in = math.atan2(b[1] - a[1], b[0] - a[0])
            if i + 1 < len(points):
                c = points[i + 1]
                phi_out = math.atan2(c[1] - b[1], c[0] - b[0])
                turn = (phi_out - phi_in + math.pi) % (2 * math.pi) - math.pi
                out_leg = math.dist(b, c)
            else:
                turn, out_leg = 0.0, 0.0
            tangent = 0.0
            radius = corner_radius_m
            if abs(turn) > 1e-3:
                # Fillet the corner; on short legs shrink the radius so arcs never overlap.
                used_in = math.dist(a, start)
                tangent = min(
                    radius * math.tan(abs(turn) / 2), (leg - used_in) * 0.999, out_leg * 0.5
                )
                tangent = max(tangent, 0.0)
                radius = tangent / math.tan(abs(turn) / 2)
            straight_end = (b[0] - tangent * math.cos(phi_in), b[1] - tangent * math.sin(phi_in))
            straight = math.dist(start, straight_end)
            if straight > 1e-6:
                self._pieces.append(_Piece(s, straight, start[0], start[1], phi_in, 0.0))
                s += straight
            if tangent > 1e-6:
                arc = radius * abs(turn)
                self._pieces.append(
                    _Piece(s, arc, straight_end[0], straight_end[1], phi_in, turn / arc)
                )
                s += arc
                start = (b[0] + tangent * math.cos(phi_out), b[1] + tangent * math.sin(phi_out))
            else:
                start = b
            self._alt_s.append(s)
        self.length_m = s
        self._starts = [p.s0_m for p in self._pieces]

    def _to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = math.radians(lon - self._lon0) * EARTH_RADIUS_M * self._cos_lat0
        y = math.radians(lat - self._lat0) * EARTH_RADIUS_M
        return x, y

    def _to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self._lat0 + math.degrees(y / EARTH_RADIUS_M)
        lon = self._lon0 + math.degrees(x / (EARTH_RADIUS_M * self._cos_lat0))
        return lat, lon

    def curvature_at(self, s_m: float) -> float:
        return self._piece(s_m).curvature_per_m

    def max_curvature(self, s0_m: float, s1_m: float) -> float:
        """Largest |curvature| on [s0_m, s1_m]: arcs shorter than a grid cell count too."""
        i = max(0, bisect.bisect_right(self._starts, s0_m) - 1)
        j = max(0, bisect.bisect_right(self._starts, s1_m) - 1)
        return max(abs(p.curvature_per_m) for p in self._pieces[i : j + 1])

    def _piece(self, s_m: float) -> _Piece:
        i = max(0, bisect.bisect_right(self._starts, s_m) - 1)
        return self._pieces[i]

    def locate(self, s_m: float) -> RoutePoint:
        s_m = min(max(s_m, 0.0), self.length_m)
        p = self._piece(s_m)
        d = s_m - p.s0_m
        k = p.curvature_per_m
        if k == 0.0:
            phi = p.phi0_rad
            x = p.x0_m + d * math.cos(phi)
            y = p.y0_m + d * math.sin(phi)
        else:
            phi = p.phi0_rad + k * d
            x = p.x0_m + (math.sin(phi) - math.sin(p.phi0_rad)) / k
            y = p.y0_m - (math.cos(phi) - math.cos(p.phi0_rad)) / k
        lat, lon = self._to_latlon(x, y)
        j = max(0, min(bisect.bisect_right(self._alt_s, s_m) - 1, len(self._alts) - 2))
        span = self._alt_s[j + 1] - self._alt_s[j]
        frac = (s_m - self._alt_s[j]) / span if span > 0 else 0.0
        alt = self._alts[j] + (self._alts[j + 1] - self._alts[j]) * min(max(frac, 0.0), 1.0)
        course = (90.0 - math.degrees(phi)) % 360.0
        return RoutePoint(lat, lon, alt, course, k)


@dataclass(frozen=True, slots=True)
class _Profile:
    """A drive step's speed profile on a distance grid; each cell has constant acceleration."""

    s0_m: float
    ds_m: float
    v_mps: tuple[float, ...]  # at the grid points
    t_s: tuple[float, ...]  # time at the grid points, from the step's start

    @property
    def duration_s(self) -> float:
        return self.t_s[-1]

    def at(self, tau_s: float) -> tuple[float, float, float]:
        """(s_m, v_mps, accel_mps2) at ``tau_s`` seconds into the step."""
        if tau_s >= self.t_s[-1]:
            return self.s0_m + self.ds_m * (len(self.v_mps) - 1), self.v_mps[-1], 0.0
        i = max(0, bisect.bisect_right(self.t_s, tau_s) - 1)
        v0, v1 = self.v_mps[i], self.v_mps[i + 1]
        accel = (v1 * v1 - v0 * v0) / (2 * self.ds_m)
        delta = tau_s - self.t_s[i]
        v = max(v0 + accel * delta, 0.0)
        s = self.s0_m + self.ds_m * i + v0 * delta + 0.5 * accel * delta * delta
        return s, v, accel


def _speed_profile(route: Route, s0_m: float, s1_m: float, v0_mps: float, step: Step) -> _Profile:
    """Fastest profile within the step's limits: forward/backward passes on a 0.5 m grid."""
    distance = s1_m - s0_m
    cells = max(1, math.ceil(distance / 0.5))
    ds = distance / cells
    cruise = step.speed_kmh / 3.6
    vmax = []
    for i in range(cells + 1):
        # Arriving faster than this step's cruise speed: slow down to it at the braking limit.
        cap = max(cruise, math.sqrt(max(v0_mps**2 - 2 * step.decel_mps2 * i * ds, 0.0)))
        k = route.max_curvature(s0_m + max(i - 1, 0) * ds, s0_m + min(i + 1, cells) * ds)
        vmax.append(min(cap, math.sqrt(step.lateral_mps2 / k)) if k > 1e-9 else cap)
    vmax[0] = v0_mps
    vmax[-1] = min(vmax[-1], step.end_speed_kmh / 3.6)
    for i in range(cells - 1, -1, -1):
        vmax[i] = min(vmax[i], math.sqrt(vmax[i + 1] ** 2 + 2 * step.decel_mps2 * ds))
    if vmax[0] < v0_mps - 0.05:
        # Starting too fast for a corner (or the step's end) close ahead: the van would have to
        # shed speed instantly, an impossible deceleration the truth would call a crash.
        raise RouteError(
            f"cannot brake from {v0_mps * 3.6:.0f} to {vmax[0] * 3.6:.0f} km/h at the start "
            f"within decel_mps2 = {step.decel_mps2:g}; lower the previous step's end_speed_kmh"
        )
    v = [vmax[0]]
    for i in range(1, cells + 1):
        v.append(min(vmax[i], math.sqrt(v[-1] ** 2 + 2 * step.accel_mps2 * ds)))
    times = [0.0]
    for i in range(cells):
        mean = max((v[i] + v[i + 1]) / 2, 0.02)
        times.append(times[-1] + ds / mean)
    return _Profile(s0_m, ds, tuple(v), tuple(times))


@dataclass(frozen=True, slots=True)
class EngineOutput:
    rpm: float
    load_pct: float
    maf_gps: float
    map_kpa: float
    intake_c: float
    fuel_rate_lph: float
    throttle_pct: float


def gear_for(speed_kmh: float) -> int:
    """1..6: the gear a calm driver is in at this speed."""
    return bisect.bisect_right(GEAR_UPSHIFT_KMH, speed_kmh)


def engine_output(
    speed_mps: float, accel_mps2: float, coolant_c: float, ambient_c: float, running: bool
) -> EngineOutput:
    """Engine operating point for the van's motion (pure physics, no state)."""
    if not running:
        return EngineOutput(0.0, 0.0, 0.0, BARO_KPA, ambient_c, 0.0, THROTTLE_CLOSED_PCT)
    speed_kmh = speed_mps * 3.6
    idle = COLD_IDLE_RPM if coolant_c < 40.0 else WARM_IDLE_RPM
    rpm = max(idle, speed_kmh * GEAR_RPM_PER_KMH[gear_for(speed_kmh) - 1])
    wheel_w = (
        MASS_KG * accel_mps2
        + MASS_KG * GRAVITY_MPS2 * ROLLING_RESISTANCE
        + 0.5 * AIR_DENSITY_KGPM3 * DRAG_AREA_M2 * speed_mps**2
    ) * speed_mps
    # Torque curve: 340 N m flat above 1500 rpm, ramping up from 55 % at idle.
    torque_nm = 340.0 * min(1.0, 0.55 + 0.45 * max(rpm - 800.0, 0.0) / 700.0)
    max_kw = torque_nm * rpm * 2 * math.pi / 60 / 1000
    demand_kw = max(wheel_w / 1000 / DRIVETRAIN_EFFICIENCY, 0.0)
    brake_kw = min(demand_kw + ACCESSORY_KW, max_kw)
    # Pedal up when coasting or braking (accessories run on the idle governor), else the share of
    # the power available at this speed that the road asks for.
    pedal = min(demand_kw / max_kw, 1.0)
    throttle_pct = THROTTLE_CLOSED_PCT + (THROTTLE_OPEN_PCT - THROTTLE_CLOSED_PCT) * pedal
    friction_kw = 2.7 * rpm / WARM_IDLE_RPM
    fuel_lph = FUEL_L_PER_KWH * (brake_kw + friction_kw)
    load_pct = min(100.0, 100.0 * (brake_kw + 2.0) / max_kw)
    boost = min(max((load_pct - 20.0) / 80.0, 0.0), 1.0) * min(max((rpm - 900.0) / 700.0, 0.0), 1.0)
    map_kpa = BARO_KPA + 120.0 * boost
    intake_c = ambient_c + 4.0 + 25.0 * boost
    air_g_per_l = map_kpa * 1000.0 / (287.05 * (intake_c + 273.15))
    maf_gps = DISPLACEMENT_L * rpm / 120.0 * air_g_per_l * VOLUMETRIC_EFFICIENCY
    fuel_gps = fuel_lph * DIESEL_G_PER_L / 3600.0
    if maf_gps < MIN_AFR * fuel_gps:
        # Smoke limiter: the turbo (in this model) supplies the air the fuel needs.
        map_kpa *= MIN_AFR * fuel_gps / maf_gps
        maf_gps = MIN_AFR * fuel_gps
    return EngineOutput(rpm, load_pct, maf_gps, map_kpa, intake_c, fuel_lph, throttle_pct)


def in_intervals(t_s: float, intervals: tuple[Interval, ...]) -> bool:
    return any(i.t_s <= t_s < i.end_s for i in intervals)


class VehicleModel:
    """The scenario's whole drive, sampled every ``DT_S``; ``state_at(t_s)`` for any instant."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.route = Route(scenario.waypoints, scenario.corner_radius_m)
        if self.route.length_m > MAX_ROUTE_KM * 1000.0:
            raise RouteError(
                f"route is {self.route.length_m / 1000.0:.0f} km long "
                f"(limit {MAX_ROUTE_KM:.0f} km); check the waypoints' lat/lon order"
            )
        self.s_m: list[float] = []
        self.v_mps: list[float] = []
        self.accel_mps2: list[float] = []
        self.ignition: list[bool] = []
        self.engine: list[bool] = []
        self._build_kinematics()
        self.n = len(self.s_m)
        self.duration_s = (self.n - 1) * DT_S
        self.curvature_per_m = [self.route.curvature_at(s) for s in self.s_m]
        self._build_engine()
        # A scan tool's "clear all" (mode 04) also resets the distance since codes were cleared;
        # codes that heal one by one (``clear = [...]``) do not. Before the first clear the
        # count starts at the scenario's start.
        self.codes_cleared_s = sorted(c.t_s for c in scenario.dtcs if c.clear_all and not c.pending)

    # -- kinematics -------------------------------------------------------------------------
    def _build_kinematics(self) -> None:
        t_step = 0.0  # when the current step starts
        s = 0.0
        v = 0.0
        engine = False
        self.step_starts_s: list[float] = []
        for number, step in enumerate(self.scenario.plan):
            self.step_starts_s.append(t_step)
            if step.kind is StepKind.DRIVE:
                s_end = self.route.length_m if step.distance_m is None else s + step.distance_m
                if s_end > self.route.length_m + 0.5:
                    raise RouteError(
                        f"plan[{number}] drives to {s_end:.0f} m but the route is only "
                        f"{self.route.length_m:.0f} m long"
                    )
                s_end = min(s_end, self.route.length_m)
                if s_end - s < 0.5:
                    continue
                try:
                    profile = _speed_profile(self.route, s, s_end, v, step)
                except RouteError as exc:
                    raise RouteError(f"plan[{number}]: {exc}") from None
                if t_step + profile.duration_s > MAX_DURATION_S:
                    raise RouteError(f"plan[{number}]: the scenario would last over 24 h")
                self._fill(t_step, profile.duration_s, profile, s, True)
                t_step += profile.duration_s
                s, v, engine = s_end, profile.v_mps[-1], True
            else:
                if v > 0.01:
                    raise RouteError(
                        f"plan[{number}]: the van is still moving at "
                        f"{v * 3.6:.0f} km/h (end the drive with end_speed_kmh = 0)"
                    )
                engine = step.kind is StepKind.IDLE
                if t_step + step.duration_s > MAX_DURATION_S:
                    raise RouteError(f"plan[{number}]: the scenario would last over 24 h")
                self._fill(t_step, step.duration_s, None, s, engine)
                t_step += step.duration_s
        # The final instant: where the plan ends.
        self.s_m.append(s)
        self.v_mps.append(v)
        self.accel_mps2.append(0.0)
        self.ignition.append(engine)
        self.engine.append(engine)

    def _fill(
        self,
        t0_s: float,
        duration_s: float,
        profile: _Profile | None,
        s_hold_m: float,
        engine: bool,
    ) -> None:
        """Append the samples of one step (a drive profile, or standing still at ``s_hold_m``)."""
        k = len(self.s_m)
        while k * DT_S < t0_s + duration_s - 1e-9:
            s, v, a = (s_hold_m, 0.0, 0.0) if profile is None else profile.at(k * DT_S - t0_s)
            self.s_m.append(s)
            self.v_mps.append(v)
            self.accel_mps2.append(a)
            self.ignition.append(engine)
            self.engine.append(engine)
            k += 1

    # -- engine -----------------------------------------------------------------------------
    def _build_engine(self) -> None:
        vehicle = self.scenario.vehicle
        ambient = vehicle.ambient_c
        coolant = vehicle.coolant_c if vehicle.coolant_c is not None else ambient
        oil = coolant
        rest_v = vehicle.battery_v
        fuel_used = 0.0
        runtime = 0.0
        self.outputs: list[EngineOutput] = []
        self.coolant_c: list[float] = []
        self.oil_c: list[float] = []
        self.fuel_used_l: list[float] = []
        self.runtime_s: list[float] = []
        self.battery_v: list[float] = []
        for k in range(self.n):
            running = self.engine[k]
            out = engine_output(self.v_mps[k], self.accel_mps2[k], coolant, ambient, running)
            self.outputs.append(out)
            self.coolant_c.append(coolant)
            self.oil_c.append(oil)
            self.fuel_used_l.append(fuel_used)
            self.runtime_s.append(runtime)
            if running:
                self.battery_v.append(14.0 + 0.1 * min(1.0, max(out.rpm - 700.0, 0.0) / 1000.0))
                rest_v = min(12.55, rest_v + 0.0004 * DT_S)  # the alternator recharges
                tau = 420.0 / (1.0 + out.load_pct / 50.0)
                coolant += (COOLANT_TARGET_C - coolant) * DT_S / tau
                oil_target = coolant + OIL_ABOVE_COOLANT_C + OIL_LOAD_RISE_C * out.load_pct / 100
                oil += (oil_target - oil) * DT_S / (OIL_LAG * tau)
                runtime += DT_S
            else:
                self.battery_v.append(rest_v)
                rest_v -= vehicle.battery_drain_v_per_h * DT_S / 3600.0
                coolant += (ambient - coolant) * DT_S / 1800.0
                oil += (ambient - oil) * DT_S / 2400.0
                runtime = 0.0
            fuel_used += out.fuel_rate_lph * DT_S / 3600.0

    # -- queries ----------------------------------------------------------------------------
    def index_at(self, t_s: float) -> int:
        return min(max(round(t_s / DT_S), 0), self.n - 1)

    def lateral_mps2(self, k: int) -> float:
        return self.v_mps[k] ** 2 * abs(self.curvature_per_m[k])

    def fuel_level_pct(self, k: int) -> float:
        vehicle = self.scenario.vehicle
        return max(0.0, vehicle.fuel_level_pct - 100.0 * self.fuel_used_l[k] / vehicle.fuel_tank_l)

    def dtcs_at(self, t_s: float, pending: bool = False) -> tuple[str, ...]:
        codes: list[str] = []
        for change in self.scenario.dtcs:
            if change.t_s > t_s or change.pending != pending:
                continue
            codes = _apply_dtc_change(codes, change)
        return tuple(codes)

    def gnss_fix_at(self, t_s: float) -> bool:
        gnss = self.scenario.gnss
        return (
            t_s >= gnss.cold_start_s
            and not in_intervals(t_s, gnss.outages)
            and self.gnss_online_at(t_s)
        )

    def gnss_online_at(self, t_s: float) -> bool:
        return not in_intervals(t_s, self.scenario.gnss.unplug)

    def obd_online_at(self, t_s: float) -> bool:
        return not in_intervals(t_s, self.scenario.obd_unplug)

    def utc_at(self, t_s: float) -> dt.datetime:
        return self.scenario.start_utc + dt.timedelta(seconds=t_s)

    def distance_m_at(self, t_s: float) -> float:
        """Distance along the route at ``t_s``, interpolated between samples."""
        if t_s >= self.duration_s:
            return self.s_m[-1]
        t_s = max(t_s, 0.0)
        below = min(int(t_s / DT_S), self.n - 1)
        if below + 1 < self.n:
            frac = (t_s - below * DT_S) / DT_S
            if 0.0 < frac < 1.0:
                return self.s_m[below] + (self.s_m[below + 1] - self.s_m[below]) * frac
        return self.s_m[self.index_at(t_s)]

    def distance_since_clear_km(self, t_s: float) -> float:
        i = bisect.bisect_right(self.codes_cleared_s, t_s)
        since_m = self.distance_m_at(self.codes_cleared_s[i - 1]) if i else 0.0
        return (self.distance_m_at(t_s) - since_m) / 1000.0

    def state_at(self, t_s: float) -> VehicleState:
        """The van at simulated time ``t_s``; after the end, the final state held, parked."""
        t_s = max(t_s, 0.0)
        k = self.index_at(min(t_s, self.duration_s))
        after_end = t_s > self.duration_s
        v = self.v_mps[k]
        # Interpolated between samples so positions are smooth at any instant.
        s = self.distance_m_at(t_s)
        point = self.route.locate(s)
        out = self.outputs[k]
        speed_kmh = 0.0 if after_end else v * 3.6
        return VehicleState(
            t_s=t_s,
            utc=self.utc_at(t_s),
            lat=point.lat,
            lon=point.lon,
            alt_m=point.alt_m,
            speed_kmh=speed_kmh,
            course_deg=point.course_deg,
            accel_mps2=0.0 if after_end else self.accel_mps2[k],
            yaw_rate_dps=0.0 if after_end else -math.degrees(point.curvature_per_m * v),
            ignition=self.ignition[k],
            engine_running=self.engine[k],
            rpm=out.rpm,
            engine_load_pct=out.load_pct,
            throttle_pct=out.throttle_pct,
            coolant_c=self.coolant_c[k],
            oil_c=self.oil_c[k],
            intake_c=out.intake_c,
            ambient_c=self.scenario.vehicle.ambient_c,
            maf_gps=out.maf_gps,
            map_kpa=out.map_kpa,
            fuel_level_pct=self.fuel_level_pct(k),
            fuel_rate_lph=out.fuel_rate_lph,
            runtime_s=self.runtime_s[k],
            odometer_km=self.scenario.vehicle.odometer_km + s / 1000.0,
            distance_since_clear_km=self.distance_since_clear_km(t_s),
            battery_v=self.battery_v[k],
            dtcs=self.dtcs_at(t_s),
            pending_dtcs=self.dtcs_at(t_s, pending=True),
            vin=self.scenario.vehicle.vin,
            gnss_fix=self.gnss_fix_at(t_s),
            gnss_online=self.gnss_online_at(t_s),
            obd_online=self.obd_online_at(t_s),
        )


def _apply_dtc_change(codes: list[str], change: DTCChange) -> list[str]:
    if change.clear_all:
        codes = []
    codes = [c for c in codes if c not in change.clear_codes]
    for code in change.set_codes:
        if code not in codes:
            codes.append(code)
    return codes


class LiveVehicle:
    """The model played in scaled real time: a ``StateSource`` for the emulated devices."""

    def __init__(
        self, model: VehicleModel, time_scale: float, start_mono_s: float | None = None
    ) -> None:
        self.model = model
        self.time_scale = time_scale
        self.start_mono_s = time.monotonic() if start_mono_s is None else start_mono_s

    def now_s(self) -> float:
        """Simulated seconds since the scenario started."""
        return (time.monotonic() - self.start_mono_s) * self.time_scale

    def state(self) -> VehicleState:
        return self.model.state_at(self.now_s())
