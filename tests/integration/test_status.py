"""`telematics-agent status` against a running daemon, a stopped one, and a missing or bad file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.status import liveness
from simulator.broker import Mosquitto
from tests.integration.test_daemon import REPO, AgentProcess
from tests.listener import Listener


def _status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_status_of_a_running_then_stopped_daemon(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    agent = AgentProcess(tmp_path, mosquitto)
    try:
        agent.wait_ready()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = _status("--config", str(agent.config), "--json")
            if out.returncode == 0 and json.loads(out.stdout)["mqtt"]["connected"]:
                break
            time.sleep(0.2)
        doc = json.loads(out.stdout)
        assert out.returncode == 0, out.stderr
        assert doc["running"] is True and doc["pid"] == agent.proc.pid
        assert doc["device_id"] == "van-d1" and doc["spool"]["depth"] == 0
        assert doc["mqtt"]["connected"] is True

        human = _status("--config", str(agent.config))
        assert human.returncode == 0
        assert "running (pid" in human.stdout
        assert "broker      up" in human.stdout
        assert "spool       0 entries waiting" in human.stdout
        assert "all making progress" in human.stdout

        rc, _ = agent.terminate()
        assert rc == 0
        gone = _status("--config", str(agent.config))
        assert gone.returncode == 3
        assert "is not running" in gone.stdout
    finally:
        agent.stop()


def test_runtime_directory_is_preferred(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    doc = {"written_unix": time.time(), "pid": os.getpid(), "version": "x", "device_id": "v"}
    (run_dir / "status.json").write_text(json.dumps(doc))
    cfg = tmp_path / "a.toml"
    cfg.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[device]\nid = "v"\n')
    out = _status("--config", str(cfg), "--json", env={"RUNTIME_DIRECTORY": str(run_dir)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["file"] == str(run_dir / "status.json")


def test_missing_or_garbage_status_is_a_clear_answer(tmp_path: Path) -> None:
    missing = _status("--status-file", str(tmp_path / "nope.json"))
    assert missing.returncode == 3
    assert "no status file" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\x00{not json")
    garbage = _status("--status-file", str(bad), "--json")
    assert garbage.returncode == 3
    assert "unreadable status file" in json.loads(garbage.stdout)["error"]


def test_a_stale_status_means_a_stuck_daemon() -> None:
    now = time.time()
    alive, why = liveness({"written_unix": now - 120, "pid": os.getpid()}, now)
    assert not alive and "120 s old" in why
    alive, why = liveness({"written_unix": now - 1, "pid": os.getpid()}, now)
    assert alive


def test_status_under_systemd_runtime_directory_found_from_the_config(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    agent = AgentProcess(tmp_path, mosquitto, env={"RUNTIME_DIRECTORY": str(run_dir)})
    try:
        agent.wait_ready()
        assert (run_dir / "status.json").is_file()
        link = agent.state_dir / "status.json"
        assert link.is_symlink() and link.resolve() == (run_dir / "status.json").resolve()
        # The technician's shell has no RUNTIME_DIRECTORY: the link leads to the file.
        env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
        out = subprocess.run(
            [sys.executable, "-m", "agent.cli", "status", "--config", str(agent.config), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["pid"] == agent.proc.pid
    finally:
        agent.stop()
