"""Geofence loading (GeoJSON, hostile files) and geometry (containment, segments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.geofence import GeofenceError, distance_m, load_geofences, parse_geofences

SQUARE = [[13.40, 52.50], [13.41, 52.50], [13.41, 52.51], [13.40, 52.51], [13.40, 52.50]]
HOLE = [[13.404, 52.504], [13.406, 52.504], [13.406, 52.506], [13.404, 52.506], [13.404, 52.504]]


def _feature(geometry: dict[str, object], **props: object) -> dict[str, object]:
    return {"type": "Feature", "properties": {"id": "f", **props}, "geometry": geometry}


def test_distance_of_one_degree_of_latitude() -> None:
    assert distance_m(52.0, 13.0, 53.0, 13.0) == pytest.approx(111_195, rel=1e-3)


def test_circle_contains_points_within_its_radius() -> None:
    fences = parse_geofences(_feature({"type": "Point", "coordinates": [13.4, 52.5]}, radius_m=100))
    (fence,) = fences.fences
    assert fence.contains(52.5 + 99 / 111_195, 13.4)
    assert not fence.contains(52.5 + 101 / 111_195, 13.4)


def test_polygon_with_a_hole() -> None:
    fences = parse_geofences(_feature({"type": "Polygon", "coordinates": [SQUARE, HOLE]}))
    (fence,) = fences.fences
    assert fence.contains(52.502, 13.402)
    assert not fence.contains(52.505, 13.405)  # in the hole
    assert not fence.contains(52.52, 13.405)


def test_multipolygon_and_speed_limit_lookup() -> None:
    other = [[[c[0] + 0.1, c[1]] for c in SQUARE]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            _feature(
                {"type": "MultiPolygon", "coordinates": [[SQUARE], other]}, speed_limit_kmh=30
            ),
            {
                "type": "Feature",
                "properties": {"id": "zone", "radius_m": 5000, "speed_limit_kmh": 50},
                "geometry": {"type": "Point", "coordinates": [13.405, 52.505]},
            },
        ],
    }
    fences = parse_geofences(doc)
    assert fences.speed_limit_kmh(52.505, 13.505) == 30
    assert fences.speed_limit_kmh(52.505, 13.405) == 30  # the lowest of both
    assert fences.speed_limit_kmh(52.52, 13.43) == 50
    assert fences.speed_limit_kmh(10.0, 10.0) is None


def test_segment_through_a_polygon_reports_its_inside_span() -> None:
    (fence,) = parse_geofences(_feature({"type": "Polygon", "coordinates": [SQUARE]})).fences
    span = fence.segment_inside((52.505, 13.39), (52.505, 13.42))
    assert span is not None
    assert span[0] == pytest.approx(1 / 3, abs=1e-3)
    assert span[1] == pytest.approx(2 / 3, abs=1e-3)
    assert fence.segment_inside((52.52, 13.39), (52.52, 13.42)) is None


def test_segment_through_a_circle() -> None:
    (fence,) = parse_geofences(
        _feature({"type": "Point", "coordinates": [13.4, 52.5]}, radius_m=10)
    ).fences
    west, east = 13.4 - 20 / 67_700, 13.4 + 20 / 67_700
    span = fence.segment_inside((52.5, west), (52.5, east))
    assert span is not None
    assert span[0] == pytest.approx(0.25, abs=0.01)
    assert span[1] == pytest.approx(0.75, abs=0.01)


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(52.49, 52.52),
    lon=st.floats(13.39, 13.42),
    lat2=st.floats(52.49, 52.52),
    lon2=st.floats(13.39, 13.42),
)
@example(lat=52.5, lon=13.390625, lat2=52.5, lon2=13.4)  # along an edge, ending on a corner
def test_segment_span_agrees_with_containment(
    lat: float, lon: float, lat2: float, lon2: float
) -> None:
    (fence,) = parse_geofences(_feature({"type": "Polygon", "coordinates": [SQUARE, HOLE]})).fences
    span = fence.segment_inside((lat, lon), (lat2, lon2))
    if fence.contains(lat, lon) or fence.contains(lat2, lon2):
        assert span is not None
    if span is not None:
        assert 0.0 <= span[0] <= span[1] <= 1.0


BAD = [
    ("[]", "expected a GeoJSON object"),
    ('{"type": "Topology"}', "expected a FeatureCollection or Feature"),
    ('{"type": "FeatureCollection", "features": {}}', "'features' must be a list"),
    (json.dumps(_feature({"type": "Point", "coordinates": [13.4, 52.5]})), "radius_m"),
    (json.dumps(_feature({"type": "Point", "coordinates": [200, 52.5]}, radius_m=5)), "[lon, lat]"),
    (json.dumps(_feature({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})), "LineString"),
    (json.dumps(_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})), "at least 4"),
    (json.dumps({"type": "Feature", "properties": {}, "geometry": None}), "properties.id"),
    (
        json.dumps(
            _feature({"type": "Point", "coordinates": [1, 1]}, radius_m=5, speed_limit_kmh="x")
        ),
        "speed_limit_kmh",
    ),
    (
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [_feature({"type": "Point", "coordinates": [1, 1]}, radius_m=5)] * 2,
            }
        ),
        "duplicate id",
    ),
    ("{not json", "not valid JSON"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_geofence_files_give_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fences.geojson"
    path.write_text(text)
    with pytest.raises(GeofenceError, match=None) as info:
        load_geofences(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeofenceError, match="not found"):
        load_geofences(tmp_path / "nope.geojson")


def test_bundled_scenario_geofences_load() -> None:
    path = Path(__file__).parents[2] / "simulator" / "scenarios" / "urban_geofences.geojson"
    fences = load_geofences(path)
    assert {f.id for f in fences.fences} >= {"depot"}


def test_example_geofences_load() -> None:
    fences = load_geofences(Path(__file__).parents[2] / "config" / "geofences.example.geojson")
    assert fences.fences
    assert all(f.id for f in fences.fences)
