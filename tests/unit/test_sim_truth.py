"""Ground truth: consistent with the model's kinematics, names as in the agent's event table."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from agent.events import EventType
from simulator.model import DT_S, VehicleModel
from simulator.scenario import bundled_names, load_scenario
from simulator.truth import TruthEvent, TruthType, derive_truth, read_truth, write_truth


@cache
def model(name: str) -> VehicleModel:
    return VehicleModel(load_scenario(name))


@cache
def truth(name: str) -> tuple[TruthEvent, ...]:
    return tuple(derive_truth(model(name)))


def _window(m: VehicleModel, t_s: float, seconds: float) -> range:
    k = m.index_at(t_s)
    return range(k, min(m.n, k + round(seconds / DT_S)))


def _pairs(
    events: tuple[TruthEvent, ...], start: TruthType, end: TruthType
) -> list[tuple[float, float]]:
    starts = [e.t_s for e in events if e.type is start]
    ends = [e.t_s for e in events if e.type is end]
    return list(zip(starts, ends, strict=False))


def test_truth_types_are_exactly_the_agent_event_types() -> None:
    assert {t.value for t in TruthType} == {t.value for t in EventType}


def test_urban_round_has_every_promised_event() -> None:
    counts = Counter(e.type for e in truth("urban_delivery"))
    for kind in (TruthType.HARSH_BRAKE, TruthType.HARSH_ACCEL, TruthType.HARSH_TURN):
        assert counts[kind] == 1, kind
    assert counts[TruthType.STOP_START] >= 4 and counts[TruthType.IDLE_START] >= 1
    assert counts[TruthType.SPEEDING_START] == counts[TruthType.SPEEDING_END] == 1
    assert counts[TruthType.DTC_SET] == counts[TruthType.DTC_CLEARED] == 1
    depot = [e for e in truth("urban_delivery") if e.data.get("geofence_id") == "depot"]
    assert [e.type for e in depot] == [
        TruthType.GEOFENCE_ENTER,
        TruthType.GEOFENCE_EXIT,
        TruthType.GEOFENCE_ENTER,
    ]
    assert counts[TruthType.TRIP_START] == counts[TruthType.TRIP_END] == 1


def test_every_scenario_covers_its_purpose() -> None:
    def kinds(name: str) -> Counter[TruthType]:
        return Counter(e.type for e in truth(name))

    assert kinds("tunnels")[TruthType.GNSS_LOST] >= 3
    assert kinds("tunnels")[TruthType.GNSS_REGAINED] == kinds("tunnels")[TruthType.GNSS_LOST]
    assert kinds("adapter_unplug")[TruthType.OBD_LOST] == 1
    assert kinds("adapter_unplug")[TruthType.OBD_REGAINED] == 1
    assert kinds("ignition_cycles")[TruthType.TRIP_END] >= 3
    assert kinds("ignition_cycles")[TruthType.LOW_BATTERY] >= 1
    assert kinds("highway")[TruthType.LOW_FUEL] == 1
    cold = model("cold_start")
    assert not cold.gnss_fix_at(39.9) and cold.gnss_fix_at(40.0)
    assert TruthType.GNSS_LOST not in kinds("cold_start")  # a fix never had is not lost


@pytest.mark.parametrize("name", bundled_names())
def test_harsh_events_match_the_kinematics(name: str) -> None:
    m = model(name)
    for event in truth(name):
        window = _window(m, event.t_s, 0.5)
        if event.type is TruthType.HARSH_BRAKE:
            assert m.v_mps[window[0]] * 3.6 >= 10.0
            assert all(m.accel_mps2[k] <= -3.0 for k in window)
        elif event.type is TruthType.HARSH_ACCEL:
            assert all(m.accel_mps2[k] >= 2.5 and m.v_mps[k] * 3.6 >= 10.0 for k in window)
        elif event.type is TruthType.HARSH_TURN:
            assert all(m.lateral_mps2(k) >= 3.0 and m.v_mps[k] * 3.6 >= 30.0 for k in window)


@pytest.mark.parametrize("name", bundled_names())
def test_no_harsh_kinematics_without_a_truth_event(name: str) -> None:
    m = model(name)
    flagged = {e.type for e in truth(name)}
    if TruthType.HARSH_BRAKE not in flagged:
        assert min(m.accel_mps2) > -3.0
    if TruthType.HARSH_ACCEL not in flagged:
        assert max(m.accel_mps2) < 2.5
    if TruthType.HARSH_TURN not in flagged:
        assert max(m.lateral_mps2(k) for k in range(m.n)) < 3.0


@pytest.mark.parametrize("name", bundled_names())
def test_idle_means_standing_with_the_engine_running(name: str) -> None:
    m = model(name)
    for start, end in _pairs(truth(name), TruthType.IDLE_START, TruthType.IDLE_END):
        assert end - start >= 120.0
        for k in range(m.index_at(start), m.index_at(end)):
            assert m.v_mps[k] * 3.6 < 2.0 and m.engine[k] and m.ignition[k]


@pytest.mark.parametrize("name", bundled_names())
def test_stops_speeding_and_links_match_the_model(name: str) -> None:
    m = model(name)
    events = truth(name)
    for start, end in _pairs(events, TruthType.STOP_START, TruthType.STOP_END):
        assert end - start >= 180.0
        assert all(m.v_mps[k] < 0.01 for k in range(m.index_at(start), m.index_at(end)))
    for event in events:
        if event.type is TruthType.SPEEDING_START:
            limit = event.data["limit_kmh"]
            assert all(m.v_mps[k] * 3.6 > limit for k in _window(m, event.t_s, 10.0))
        if event.type is TruthType.GNSS_LOST:
            assert not any(m.gnss_fix_at(k * DT_S) for k in _window(m, event.t_s, 10.0))
        if event.type is TruthType.OBD_LOST:
            assert not any(m.obd_online_at(k * DT_S) for k in _window(m, event.t_s, 10.0))
        if event.type is TruthType.TRIP_END:
            assert not any(m.ignition[k] for k in _window(m, event.t_s, 60.0))


def test_truth_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    write_truth(truth("urban_delivery"), path)
    rows = read_truth(path)
    assert len(rows) == len(truth("urban_delivery"))
    assert set(rows[0]) == {"type", "t_s", "lat", "lon", "data"}
    assert [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)
