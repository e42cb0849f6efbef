"""Scenario files: bundled ones load and drive; bad ones fail naming the file and the key."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.model import Route, RouteError, VehicleModel
from simulator.scenario import (
    ScenarioError,
    StepKind,
    bundled_names,
    load_scenario,
    parse_scenario,
)

GOOD = """
name = "t"
start_utc = "2026-03-02T07:00:00Z"
[route]
waypoints = [[52.52, 13.40], [52.52, 13.41]]
[[plan]]
do = "idle"
duration_s = 10
[[plan]]
do = "drive"
speed_kmh = 40
"""

REQUIRED = {
    "urban_delivery",
    "highway",
    "tunnels",
    "cold_start",
    "adapter_unplug",
    "ignition_cycles",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_required_scenarios_are_bundled_and_modest_in_length() -> None:
    assert set(bundled_names()) >= REQUIRED
    for name in bundled_names():
        model = VehicleModel(load_scenario(name))
        assert 10 * 60 <= model.duration_s <= 40 * 60, name


def test_a_minimal_scenario_loads_with_defaults(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, GOOD))
    assert [s.kind for s in scenario.plan] == [StepKind.IDLE, StepKind.DRIVE]
    assert scenario.speed_limit_kmh == 100.0
    assert scenario.start_utc.utcoffset() is not None


@pytest.mark.parametrize(
    ("edit", "key", "problem"),
    [
        (("duration_s = 10", "duration_s = -1"), "plan[0].duration_s", "must be > 0"),
        (("duration_s = 10", "duration_s = 10\ndwell_s = 10"), "plan[0].dwell_s", "unknown key"),
        (("speed_kmh = 40", 'speed_kmh = "fast"'), "plan[1].speed_kmh", "must be a number"),
        (('do = "idle"', 'do = "fly"'), "plan[0].do", "unknown step 'fly'"),
        (("[52.52, 13.41]", "[152.52, 13.41]"), "route.waypoints[1]", "out of range"),
        (
            ('start_utc = "2026-03-02T07:00:00Z"', 'start_utc = "2026-03-02T07:00:00"'),
            "start_utc",
            "time zone",
        ),
        (('name = "t"', 'name = "t"\nspeed_limit_kmh = true'), "speed_limit_kmh", "number"),
    ],
)
def test_errors_name_the_file_and_the_key(
    tmp_path: Path, edit: tuple[str, str], key: str, problem: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert str(path) in message and f": {key}: " in message and problem in message


def test_broken_toml_and_missing_geofence_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"custom\.toml: not valid TOML"):
        load_scenario(_write(tmp_path, GOOD + "\n[[plan]\n"))
    with pytest.raises(ScenarioError, match=r"geofences: cannot read .*nope.geojson"):
        load_scenario(_write(tmp_path, 'geofences = "nope.geojson"\n' + GOOD))


def test_a_point_geofence_without_radius_is_rejected(tmp_path: Path) -> None:
    fences = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"id": "a"},
                "geometry": {"type": "Point", "coordinates": [13.4, 52.52]},
            }
        ],
    }
    (tmp_path / "f.geojson").write_text(json.dumps(fences), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"geofences: f.geojson: features\[0\].*radius_m"):
        load_scenario(_write(tmp_path, 'geofences = "f.geojson"\n' + GOOD))


def test_route_from_a_geojson_linestring(tmp_path: Path) -> None:
    line = {"type": "LineString", "coordinates": [[13.40, 52.52], [13.41, 52.52, 40.0]]}
    (tmp_path / "r.geojson").write_text(json.dumps(line), encoding="utf-8")
    text = GOOD.replace("waypoints = [[52.52, 13.40], [52.52, 13.41]]", 'geojson = "r.geojson"')
    scenario = load_scenario(_write(tmp_path, text))
    assert scenario.waypoints == ((52.52, 13.40, 50.0), (52.52, 13.41, 40.0))


def test_a_plan_longer_than_the_route_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("speed_kmh = 40", "speed_kmh = 40\ndistance_m = 5000")
    with pytest.raises(RouteError, match=r"plan\[1\] drives to 5000 m but the route is only"):
        VehicleModel(load_scenario(_write(tmp_path, text)))


def test_an_unknown_bundled_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ScenarioError, match="urban_delivery"):
        load_scenario("no_such_scenario")


FULL = (
    "speed_limit_kmh = 60\nseed = 3\n"
    + GOOD
    + """
[vehicle]
vin = "WF0EXXTTGEMA12345"
[gnss]
outages = [{ t_s = 5, duration_s = 20 }]
[obd]
unplug = [{ t_s = 5, duration_s = 20 }]
[[dtc]]
t_s = 3
set = ["P0301"]
"""
)
PATHS = [
    ("name",),
    ("start_utc",),
    ("speed_limit_kmh",),
    ("seed",),
    ("route",),
    ("route", "waypoints"),
    ("route", "waypoints", 0),
    ("route", "corner_radius_m"),
    ("plan",),
    ("plan", 0),
    ("plan", 0, "do"),
    ("plan", 0, "duration_s"),
    ("plan", 1, "speed_kmh"),
    ("plan", 1, "distance_m"),
    ("plan", 1, "end_speed_kmh"),
    ("plan", 1, "decel_mps2"),
    ("vehicle",),
    ("vehicle", "vin"),
    ("vehicle", "battery_v"),
    ("gnss",),
    ("gnss", "outages"),
    ("gnss", "outages", 0, "t_s"),
    ("obd", "unplug"),
    ("dtc",),
    ("dtc", 0, "set"),
    ("dtc", 0, "clear"),
    ("geofences",),
]
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(-200, 200), max_size=4),
    st.lists(st.lists(st.floats(-100, 100), max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(PATHS), value=HOSTILE)
def test_hostile_values_give_a_clear_error_never_a_traceback(
    path: tuple[str | int, ...], value: Any
) -> None:
    document: Any = tomllib.loads(FULL)
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is None and isinstance(target, dict):
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    try:
        scenario = parse_scenario(document, Path("fuzz.toml"))
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz.toml: ")
        return
    if sum(s.duration_s for s in scenario.plan) > 7200:
        return  # valid, just long: not worth building here
    length_m = Route(scenario.waypoints, scenario.corner_radius_m).length_m
    if length_m > 300_000:
        with pytest.raises(RouteError, match=r"km long \(limit 300 km\)"):
            VehicleModel(scenario)
        return
    if length_m > 20_000:
        return  # valid, just long
    try:
        VehicleModel(scenario)
    except RouteError as exc:
        assert "plan[" in str(exc) or "route" in str(exc)
