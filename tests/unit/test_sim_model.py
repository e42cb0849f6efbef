"""Vehicle model: physical limits, a plausible diesel van, determinism, positions on the route."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.model import DT_S, MIN_AFR, RouteError, VehicleModel
from simulator.scenario import StepKind, bundled_names, load_scenario, parse_scenario

DIESEL_G_PER_L = 835.0


@cache
def model(name: str) -> VehicleModel:
    return VehicleModel(load_scenario(name))


def _step_of(m: VehicleModel, k: int) -> int:
    t = k * DT_S
    return max(i for i, start in enumerate(m.step_starts_s) if start <= t + 1e-9)


@pytest.mark.parametrize("name", bundled_names())
def test_normal_driving_stays_clearly_below_harsh_thresholds(name: str) -> None:
    m = model(name)
    for k in range(m.n):
        step = m.scenario.plan[_step_of(m, k)]
        if step.kind is not StepKind.DRIVE:
            assert m.v_mps[k] == 0.0
            continue
        # A step only exceeds the calm limits where the scenario asks for it.
        assert m.accel_mps2[k] <= max(1.5, step.accel_mps2) + 1e-6
        assert m.accel_mps2[k] >= -max(2.0, step.decel_mps2) - 1e-6
        # 2 %: the corner-speed limit is enforced on a 0.5 m grid, arcs start between points.
        assert m.lateral_mps2(k) <= max(2.0, step.lateral_mps2) * 1.02
        if step.accel_mps2 <= 1.5:
            assert m.accel_mps2[k] <= 1.5 + 1e-6
        if step.decel_mps2 <= 2.0:
            assert m.accel_mps2[k] >= -2.0 - 1e-6


@pytest.mark.parametrize("name", bundled_names())
def test_speed_is_the_derivative_of_distance(name: str) -> None:
    m = model(name)
    for k in range(1, m.n):
        mean = (m.v_mps[k] + m.v_mps[k - 1]) / 2
        assert abs((m.s_m[k] - m.s_m[k - 1]) - mean * DT_S) < 0.05


def test_engine_is_a_plausible_diesel_van() -> None:
    m = model("urban_delivery")
    idle_fuel = [m.outputs[k].fuel_rate_lph for k in range(m.n) if m.engine[k] and m.v_mps[k] == 0]
    assert idle_fuel and all(0.8 <= f <= 1.2 for f in idle_fuel)
    running_v = [m.battery_v[k] for k in range(m.n) if m.engine[k]]
    off_v = [m.battery_v[k] for k in range(m.n) if not m.engine[k]]
    assert all(13.9 <= v <= 14.2 for v in running_v)
    assert all(12.3 <= v <= 12.6 for v in off_v)
    assert m.coolant_c[0] == pytest.approx(8.0) and max(m.coolant_c) > 60.0
    assert m.fuel_level_pct(m.n - 1) < m.fuel_level_pct(0)
    highway = model("highway")
    cruise = [
        highway.outputs[k]
        for k in range(highway.n)
        if abs(highway.v_mps[k] * 3.6 - 100.0) < 0.01 and highway.accel_mps2[k] == 0.0
    ]
    assert cruise and all(1800 < o.rpm < 2300 and 6.0 < o.fuel_rate_lph < 11.0 for o in cruise)


@pytest.mark.parametrize("name", ["urban_delivery", "highway"])
def test_air_and_fuel_are_consistent(name: str) -> None:
    """MAF and fuel rate obey the stated physics: AFR >= 17 (smoke limit), lean at idle."""
    m = model(name)
    for k in range(m.n):
        out = m.outputs[k]
        if not m.engine[k]:
            assert out.maf_gps == 0.0 and out.fuel_rate_lph == 0.0 and out.rpm == 0.0
            continue
        afr = out.maf_gps / (out.fuel_rate_lph * DIESEL_G_PER_L / 3600.0)
        assert MIN_AFR - 1e-6 <= afr <= 90.0
        assert 101.0 <= out.map_kpa <= 300.0 and 0.0 <= out.load_pct <= 100.0


def test_the_model_is_deterministic() -> None:
    a = VehicleModel(load_scenario("tunnels"))
    b = VehicleModel(load_scenario("tunnels"))
    assert a.s_m == b.s_m and a.fuel_used_l == b.fuel_used_l
    assert a.state_at(321.7) == b.state_at(321.7)


def test_positions_follow_the_route_polyline() -> None:
    """Every model position lies on the drawn route (corners cut by at most the fillet)."""
    m = model("urban_delivery")
    lat0, lon0 = m.scenario.waypoints[0][:2]
    scale = 6_371_000.0 * math.pi / 180

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (lon - lon0) * scale * math.cos(math.radians(lat0)), (lat - lat0) * scale

    legs = [
        (xy(*a[:2]), xy(*b[:2]))
        for a, b in zip(m.scenario.waypoints, m.scenario.waypoints[1:], strict=False)
    ]

    def distance(p: tuple[float, float]) -> float:
        best = math.inf
        for (ax, ay), (bx, by) in legs:
            dx, dy = bx - ax, by - ay
            u = max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / (dx * dx + dy * dy)))
            best = min(best, math.hypot(p[0] - ax - u * dx, p[1] - ay - u * dy))
        return best

    for t in range(0, int(m.duration_s), 5):
        state = m.state_at(t)
        assert distance(xy(state.lat, state.lon)) < 8.0  # fillet of a 25 m corner: <= 7.3 m
    last = m.state_at(m.duration_s)
    assert math.dist(xy(last.lat, last.lon), xy(*m.scenario.waypoints[-1][:2])) < 1.0


def test_state_after_the_end_is_parked_and_time_runs_on() -> None:
    m = model("cold_start")
    state = m.state_at(m.duration_s + 100.0)
    assert state.speed_kmh == 0.0 and state.t_s == pytest.approx(m.duration_s + 100.0)
    assert (state.utc - m.scenario.start_utc).total_seconds() == pytest.approx(state.t_s)


@settings(max_examples=25, deadline=None)
@given(
    legs=st.lists(st.tuples(st.floats(-400, 400), st.floats(-400, 400)), min_size=2, max_size=6),
    radius_m=st.floats(5, 80),
    speed_kmh=st.floats(20, 120),
    accel_mps2=st.floats(0.5, 3.5),
    decel_mps2=st.floats(0.5, 6.0),
    lateral_mps2=st.floats(0.5, 5.0),
)
def test_any_route_and_limits_give_a_physical_drive(
    legs: list[tuple[float, float]],
    radius_m: float,
    speed_kmh: float,
    accel_mps2: float,
    decel_mps2: float,
    lateral_mps2: float,
) -> None:
    points = [[51.34, 12.37]]
    for dx, dy in legs:
        lat, lon = points[-1]
        points.append([lat + dy / 111_195.0, lon + dx / (111_195.0 * math.cos(math.radians(lat)))])
    document = {
        "route": {"waypoints": points, "corner_radius_m": radius_m},
        "plan": [
            {
                "do": "drive",
                "speed_kmh": speed_kmh,
                "accel_mps2": accel_mps2,
                "decel_mps2": decel_mps2,
                "lateral_mps2": lateral_mps2,
            },
            {"do": "park", "duration_s": 5},
        ],
    }
    try:
        m = VehicleModel(parse_scenario(document, Path("prop.toml")))
    except RouteError:
        return  # a degenerate route (all points within 0.5 m)
    assert abs(m.s_m[-1] - m.route.length_m) < 0.01
    assert m.v_mps[-1] == 0.0
    for k in range(m.n):
        assert -decel_mps2 - 1e-6 <= m.accel_mps2[k] <= accel_mps2 + 1e-6
        assert m.v_mps[k] <= speed_kmh / 3.6 + 1e-6
        assert m.lateral_mps2(k) <= lateral_mps2 * 1.05 + 0.05
    previous = m.state_at(0.0)
    for k in range(1, m.n, 5):
        state = m.state_at(k * DT_S)
        step_m = math.dist(
            (previous.lat * 111_195.0, previous.lon * 111_195.0 * math.cos(math.radians(51.34))),
            (state.lat * 111_195.0, state.lon * 111_195.0 * math.cos(math.radians(51.34))),
        )
        assert step_m <= (speed_kmh / 3.6) * 0.5 + 0.5  # no jumps along the way
        previous = state
