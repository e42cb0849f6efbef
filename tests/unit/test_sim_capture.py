"""Capture files: the documented format, the fixed OBD schedule, values from the model."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from simulator.capture import CONNECT_REQUESTS, record_capture, single_pid_requests
from simulator.cli import main
from simulator.model import VehicleModel
from simulator.nmea import Talker
from simulator.scenario import load_scenario
from simulator.talker import Receiver

MULTI_PID = {"010D0C", "01045E100B0F", "01052F1F31A6"}


def _record(
    tmp_path: Path, name: str, variant: str = "v1.5"
) -> tuple[dict[str, Any], list[dict[str, Any]], VehicleModel]:
    model = VehicleModel(load_scenario(name))
    path = tmp_path / f"{name}.capture"
    summary = record_capture(model, path, seed=7, elm_variant=variant)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert summary.records == len(lines) - 1
    return lines[0], lines[1:], model


def _ecu_bytes(reply: str) -> list[int]:
    """Data bytes of a single-frame reply with headers on ("7E8 03 41 0D 2D")."""
    line = reply.split("\r")[0].split()
    assert line[0] == "7E8"
    return [int(b, 16) for b in line[2:]]


def test_header_and_record_shapes(tmp_path: Path) -> None:
    header, records, model = _record(tmp_path, "urban_delivery")
    assert header["capture"] == 1 and header["scenario"] == "urban_delivery"
    assert header["start_utc"] == "2026-03-02T07:30:00Z"
    assert header["gnss_hz"] == 1.0 and header["elm_variant"] == "v1.5"
    times = [r["t"] for r in records]
    assert times == sorted(times) and times[-1] <= model.duration_s + 1e-6
    for r in records:
        if "link" in r:
            assert r["dev"] in ("gnss", "obd") and r["link"] in ("unplug", "replug")
        elif r["dev"] == "gnss":
            assert r["data"].startswith("$")
        elif r["dev"] == "obd":
            assert r["reply"].endswith(">")
        else:
            assert r["dev"] == "ign" and r["level"] in (0, 1)
    gnss = [r for r in records if r["dev"] == "gnss" and "data" in r]
    assert len(gnss) == int(model.duration_s) + 1


def test_obd_follows_the_poll_plan_and_answers_with_model_values(tmp_path: Path) -> None:
    _, records, model = _record(tmp_path, "urban_delivery")
    obd = [r for r in records if r["dev"] == "obd"]
    assert [r["req"] for r in obd[: len(CONNECT_REQUESTS)]] == list(CONNECT_REQUESTS)
    speed_times = [r["t"] for r in obd if r["req"] == "010D0C"]
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(speed_times)}
    assert 0.5 in gaps
    checked = 0
    for r in obd:
        if r["req"] != "010D0C" or r["t"] < 200:
            continue
        data = _ecu_bytes(r["reply"])
        assert data[0] == 0x41 and data[1] == 0x0D and data[3] == 0x0C
        state = model.state_at(r["t"])
        assert abs(data[2] - state.speed_kmh) <= 1.0
        assert abs((data[4] * 256 + data[5]) / 4 - state.rpm) <= 1.0
        checked += 1
    assert checked > 1000
    ignition_on = {r["t"] for r in records if r["dev"] == "ign" and r["level"] == 1}
    battery = [r["t"] for r in obd if r["req"] == "ATRV"]
    assert all(round(t % 30.0, 6) == 0.0 or t in ignition_on for t in battery)
    assert len(battery) >= model.duration_s // 30


def test_ignition_records_match_the_model(tmp_path: Path) -> None:
    _, records, model = _record(tmp_path, "ignition_cycles")
    levels = [(r["t"], r["level"]) for r in records if r["dev"] == "ign"]
    assert levels[0] == (0.0, 0)
    assert [level for _, level in levels] == [0, 1, 0, 1, 0, 1, 0]
    for t, level in levels:
        assert model.ignition[model.index_at(t)] == bool(level)
    polls_while_off = [
        r
        for r in records
        if r["dev"] == "obd" and r["req"] == "010D0C" and not model.ignition[model.index_at(r["t"])]
    ]
    assert polls_while_off == []


def test_unplugged_adapter_has_no_records_and_is_reconnected(tmp_path: Path) -> None:
    _, records, _ = _record(tmp_path, "adapter_unplug")
    links = [(r["t"], r["link"]) for r in records if r["dev"] == "obd" and "link" in r]
    assert links == [(150.0, "unplug"), (210.0, "replug"), (400.0, "unplug"), (404.0, "replug")]
    during = [
        r
        for r in records
        if r["dev"] == "obd" and "req" in r and (150.0 <= r["t"] < 210.0 or 400.0 <= r["t"] < 404.0)
    ]
    assert during == []
    after = [r["req"] for r in records if r["dev"] == "obd" and "req" in r and r["t"] == 210.0]
    assert after[: len(CONNECT_REQUESTS)] == list(CONNECT_REQUESTS)


def test_clone_gets_one_pid_per_request(tmp_path: Path) -> None:
    header, records, _ = _record(tmp_path, "cold_start", variant="clone-v2.1")
    assert header["elm_variant"] == "clone-v2.1"
    requests = {r["req"] for r in records if r["dev"] == "obd" and "req" in r}
    assert not requests & MULTI_PID
    assert {"010D", "010C", "0104", "015E", "01A6"} <= requests
    assert single_pid_requests("010D0C") == ["010D", "010C"]
    assert single_pid_requests("0902") == ["0902"]


def test_capture_gnss_bytes_are_what_the_receiver_writes(tmp_path: Path) -> None:
    _, records, model = _record(tmp_path, "tunnels")
    receiver = Receiver(model.scenario.gnss, Talker.GP, 1.0, 7)
    expected = []
    for n in range(int(model.duration_s) + 1):
        state = model.state_at(float(n))
        data = receiver.epoch_bytes(state)
        if state.gnss_online:
            expected.append(data.decode("latin-1"))
    assert [r["data"] for r in records if r["dev"] == "gnss" and "data" in r] == expected
    links = [(r["t"], r["link"]) for r in records if r["dev"] == "gnss" and "link" in r]
    assert links == [(420.0, "unplug"), (440.0, "replug")]


def test_record_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.jsonl"
    truth = tmp_path / "t.jsonl"
    assert (
        main(
            [
                "record",
                "--scenario",
                "cold_start",
                "--out",
                str(out),
                "--truth",
                str(truth),
                "--gnss-hz",
                "5",
                "--talker",
                "GN",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["capture"] == str(out) and summary["gnss"] > 3000
    header = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert header["gnss_hz"] == 5.0 and header["talker"] == "GN"
    assert truth.read_text(encoding="utf-8").count("\n") == 5
