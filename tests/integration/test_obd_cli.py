"""`telematics-agent obd` as a real process against the emulated adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simulator.elm327 import ELM327Server
from simulator.state import FixedState, running_van

STATE = running_van()


def agent(*args: str, timeout_s: float = 40.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_obd_json_prints_vehicle_then_readings(tmp_path: Path) -> None:
    server = ELM327Server(FixedState(STATE), tmp_path / "obd0", latency_s=0.01)
    server.start()
    try:
        result = agent("obd", "--port", str(server.path), "--json", "--count", "4")
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [r["type"] for r in records]
    assert kinds[0] == "link" and records[0]["state"] == "up"
    vehicle = next(r for r in records if r["type"] == "vehicle")
    assert vehicle["adapter"] == "ELM327 v1.5"
    assert vehicle["vin"] == "WF0XXXTTGXKA12345"
    assert "0C" in vehicle["supported_pids"] and vehicle["multi_pid"] is True
    readings = [r for r in records if r["type"] == "reading"]
    assert len(readings) == 4
    assert any(r.get("speed_kmh") == 57.0 and r.get("rpm") == 1650.25 for r in readings)
    assert any(r.get("fuel_rate_source") == "pid_5e" for r in readings)


def test_obd_without_adapter_fails_clearly(tmp_path: Path) -> None:
    result = agent("obd", "--port", str(tmp_path / "nothing"), "--connect-timeout", "1")
    assert result.returncode == 1
    assert "no ELM327 adapter answered" in result.stderr
    assert "Traceback" not in result.stderr
