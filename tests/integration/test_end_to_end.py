"""End to end: simulator -> pseudo-terminal -> agent -> real mosquitto -> a subscriber.

Everything is real: `telematics-sim run` drives a van on pseudo-terminals, `telematics-agent run`
reads them as a separate process, and a paho subscriber in the test sees what the broker got.
The receiver is noise-free here (``noise_scale = 0``), so every published coordinate must equal
the vehicle model's position at the record's GNSS time.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.broker import Mosquitto
from simulator.model import VehicleModel
from simulator.scenario import load_scenario
from tests.listener import Listener, Received

BIN = Path(sys.executable).parent
START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)

SCENARIO = f"""
name = "e2e"
start_utc = "{START.strftime("%Y-%m-%dT%H:%M:%SZ")}"
seed = 5

[route]
corner_radius_m = 30
waypoints = [[52.5200, 13.4000], [52.5200, 13.4200], [52.5300, 13.4200], [52.5300, 13.4400]]

[gnss]
noise_scale = 0

[[plan]]
do = "idle"
duration_s = 10

[[plan]]
do = "drive"
speed_kmh = 50

[[plan]]
do = "park"
duration_s = 600
"""


def _agent_config(work: Path, devices: dict[str, Any], port: int) -> Path:
    cfg = work / "agent.toml"
    cfg.write_text(
        f"""[agent]
state_dir = "{work / "state"}"
time_scale = 20.0

[device]
id = "e2e-van"

[mqtt]
host = "127.0.0.1"
port = {port}
backoff_min_s = 0.1
backoff_max_s = 0.5

[gnss]
port = "{devices["gnss"]}"

[obd]
enabled = false

[ignition]
backend = "simulated"
line_file = "{devices["ignition"]}"

[report]
min_interval_s = 0.0

[spool]
flush_interval_s = 2.0
"""
    )
    return cfg


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    scenario = tmp_path / "e2e.toml"
    scenario.write_text(SCENARIO)
    sim = subprocess.Popen(
        [str(BIN / "telematics-sim"), "run", "--scenario", str(scenario), "--time-scale", "20",
         "--dir", str(tmp_path / "van"), "--hold"],
        stdout=subprocess.PIPE,
    )
    try:
        assert sim.stdout is not None
        devices = json.loads(sim.stdout.readline())
        yield scenario, devices
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=10)


def _start_agent(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "telematics-agent"), "run", "--config", str(cfg)], stderr=subprocess.PIPE
    )


def _stop_agent(agent: subprocess.Popen[bytes]) -> str:
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)
    assert agent.stderr is not None
    return agent.stderr.read().decode(errors="replace")


def _records(messages: list[Received]) -> dict[int, dict[str, Any]]:
    """Every durable record by seq (deduplicated, as the contract tells backends to)."""
    out: dict[int, dict[str, Any]] = {}
    for m in messages:
        kind = m.topic.split("/", 3)[3]
        payload = m.json()
        if kind == "pos":
            for rec in payload["records"]:
                out[rec["seq"]] = {"kind": "pos", **rec}
        elif kind.startswith("event/") or kind in ("health", "engine"):
            out[payload["seq"]] = {"kind": kind, **payload}
    return out


def _position_records(records: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for _, r in sorted(records.items()) if r["kind"] == "pos"]


def _assert_on_route(scenario: Path, positions: list[dict[str, Any]]) -> None:
    model = VehicleModel(load_scenario(scenario))
    for rec in positions:
        ts = dt.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00"))
        state = model.state_at((ts - START).total_seconds())
        assert abs(rec["lat"] - state.lat) < 1e-5, (rec, state.lat)
        assert abs(rec["lon"] - state.lon) < 1e-5, (rec, state.lon)


def test_positions_travel_from_the_serial_port_to_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, drive: tuple[Path, dict[str, Any]]
) -> None:
    scenario, devices = drive
    sub = Listener(mosquitto.host, mosquitto.port, "fleet/v1/e2e-van/#")
    agent = _start_agent(_agent_config(tmp_path, devices, mosquitto.port))
    try:
        got = sub.wait_for(
            lambda ms: sum(len(m.json()["records"]) for m in ms if m.topic.endswith("/pos")) >= 40,
            timeout_s=60,
        )
        assert got, "fewer than 40 positions within 60 s"
    finally:
        log = _stop_agent(agent)
        sub.close()
    assert "Traceback" not in log, log
    records = _records(sub.messages)
    positions = _position_records(records)
    assert len(positions) >= 40
    assert all(r.get("time_source", "gnss") == "gnss" for r in positions)
    _assert_on_route(scenario, positions)
    seqs = sorted(records)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seq has gaps"
    # Records come out in the order they were made: seq order is time order for positions.
    times = [r["ts"] for r in positions]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_a_broker_outage_loses_nothing(
    tmp_path: Path, drive: tuple[Path, dict[str, Any]]
) -> None:
    scenario, devices = drive
    # A persistent broker keeps the subscriber's session across the restart: otherwise what
    # the agent drains before the subscriber has re-subscribed would be lost by the broker,
    # not by the agent.
    (tmp_path / "broker").mkdir()
    mosquitto = Mosquitto(tmp_path / "broker", persistent=True)
    mosquitto.start()
    sub = Listener(mosquitto.host, mosquitto.port, "fleet/v1/e2e-van/#", client_id="e2e-sub")
    agent = _start_agent(_agent_config(tmp_path, devices, mosquitto.port))
    try:
        assert sub.wait_for(lambda ms: any(m.topic.endswith("/pos") for m in ms), timeout_s=60)
        before_outage = len(_position_records(_records(sub.messages)))
        mosquitto.stop()
        time.sleep(6.0)  # two simulated minutes of driving at x20 with nobody to publish to
        mosquitto.start()
        # The listener reconnects with its persistent session; the agent drains its spool.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = _position_records(_records(sub.messages))
            if len(positions) >= before_outage + 100:
                break
            time.sleep(0.5)
    finally:
        log = _stop_agent(agent)
        sub.close()
        mosquitto.stop()
    assert "Traceback" not in log, log
    records = _records(sub.messages)
    positions = _position_records(records)
    assert len(positions) >= before_outage + 100, "the outage's positions did not arrive"
    seqs = sorted(records)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "records lost in the outage"
    _assert_on_route(scenario, positions)
    # History drained oldest first: batches arrive in seq order (duplicates aside).
    firsts = [m.json()["seq"] for m in sub.messages if m.topic.endswith("/pos")]
    deduped = list(dict.fromkeys(firsts))
    assert deduped == sorted(deduped)
