"""Remote commands end to end: real mosquitto, the daemon as a process, schema-checked results."""

from __future__ import annotations

import json
import signal
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.commands import SCHEMA_DIR
from simulator.broker import Mosquitto
from simulator.ignition import IgnitionLine
from tests.integration.test_daemon import DEVICE, AgentProcess, _payloads, _topic
from tests.listener import Listener

RESULT_SCHEMA = json.loads((SCHEMA_DIR / "cmd_result.json").read_text())


class Remote:
    """The backend's side: send a request, wait for its result."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def send(self, name: str, payload: bytes | dict[str, Any]) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.listener.client.publish(_topic(f"cmd/{name}"), data, qos=1)

    def results(self, name: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.listener.on_topic(f"/cmd/{name}/result")]

    def call(
        self, name: str, payload: bytes | dict[str, Any], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        before = len(self.results(name))
        self.send(name, payload)
        ok = self.listener.wait_for(lambda ms: len(self.results(name)) > before, timeout_s)
        assert ok, f"no result for {name} within {timeout_s} s"
        result = self.results(name)[before]
        jsonschema.validate(result, RESULT_SCHEMA)
        assert result["device_id"] == DEVICE and result["command"] == name
        return result


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Mosquitto, listener: Listener) -> Any:
    a = AgentProcess(tmp_path, mosquitto, extra_toml="[health]\nconfirm_s = 1.0\n")
    try:
        a.wait_ready()
        assert _births(listener, 1), "subscribed before the first command"
        yield a
    finally:
        a.stop()


@pytest.fixture
def remote(listener: Listener) -> Remote:
    return Remote(listener)


def test_happy_paths(agent: AgentProcess, remote: Remote) -> None:
    pong = remote.call("ping", {"id": "p-1"})
    assert pong["ok"] and pong["id"] == "p-1" and pong["result"]["pong"] is True

    got = remote.call("get_config", {"id": "g-1"})
    assert got["ok"] and got["result"]["config"]["device"]["id"] == DEVICE
    hash0 = got["result"]["config_hash"]
    assert got["result"]["config"]["report"]["moving_interval_s"] == 10.0

    flushed = remote.call("flush", {"id": "f-1"})
    assert flushed["ok"] and flushed["result"]["committed_batches"] == 0

    changed = remote.call(
        "set_config",
        {"id": "s-1", "changes": {"report.moving_interval_s": 5, "detect.speeding.limit_kmh": 90}},
    )
    assert changed["ok"], changed
    assert changed["result"]["config_hash"] != hash0
    got = remote.call("get_config", {"id": "g-2"})
    assert got["result"]["config"]["report"]["moving_interval_s"] == 5.0
    assert got["result"]["config"]["detect"]["speeding"]["limit_kmh"] == 90.0
    persisted = tomllib.loads((agent.state_dir / "overrides.toml").read_text())
    assert persisted == {"report.moving_interval_s": 5, "detect.speeding.limit_kmh": 90}

    # No GNSS and no OBD in this agent: both answer with a clear error, not silence.
    where = remote.call("locate", {"id": "l-1"})
    assert where["ok"] is False and where["error"] == "no GNSS fix yet"
    dtc = remote.call("read_dtc", {"id": "d-1"})
    assert dtc["ok"] is False and "obd.enabled = false" in dtc["error"]


def test_overrides_survive_a_restart(
    tmp_path: Path, mosquitto: Mosquitto, agent: AgentProcess, remote: Remote
) -> None:
    assert remote.call("set_config", {"id": "s-2", "changes": {"health.interval_s": 60}})["ok"]
    hash1 = remote.call("get_config", {"id": "g"})["result"]["config_hash"]
    rc, _ = agent.terminate()
    assert rc == 0
    again = AgentProcess(tmp_path, mosquitto, extra_toml="[health]\nconfirm_s = 1.0\n")
    try:
        again.wait_ready()
        assert _births(remote.listener, 2)
        got = remote.call("get_config", {"id": "g-after"})
        assert got["result"]["config"]["health"]["interval_s"] == 60.0
        assert got["result"]["config_hash"] == hash1
    finally:
        again.stop()


BAD_REQUESTS: list[tuple[str, bytes, str]] = [
    ("ping", b'{"id": "m-1", ', "malformed JSON"),
    ("ping", b"\xc3\x28", "not UTF-8"),
    ("reboot", b'{"id": "u-1"}', "unknown command 'reboot'"),
    ("ping", b'{"id": 12}', "$.id: expected string, got integer"),
    (
        "set_config",
        b'{"id": "t-1", "changes": {"report.moving_interval_s": "often"}}',
        "expected a number",
    ),
    ("set_config", b'{"id": "t-2", "changes": {"mqtt.host": "x"}}', "cannot be changed"),
    ("set_config", b'{"id": "t-3", "changes": {"report.min_interval_s": 1e9}}', "0.0 to 3600.0"),
    ("ping", b'{"id": "o-1", "pad": "' + b"x" * 5000 + b'"}', "payload too large"),
    ("flush", b'{"id": "k-1", "now": true}', "unknown member 'now'"),
]


def test_bad_requests_get_clear_errors_and_change_nothing(
    agent: AgentProcess, remote: Remote
) -> None:
    hash0 = remote.call("get_config", {"id": "before"})["result"]["config_hash"]
    for name, payload, error in BAD_REQUESTS:
        result = remote.call(name, payload)
        assert result["ok"] is False, (name, payload[:60])
        assert error in result["error"], result["error"]
    assert remote.call("get_config", {"id": "after"})["result"]["config_hash"] == hash0
    assert not (agent.state_dir / "overrides.toml").exists()
    assert remote.call("ping", {"id": "still-alive"})["ok"]
    assert agent.proc.poll() is None
    assert all(stage["ok"] for stage in agent.status()["stages"].values())


def test_set_config_that_would_break_the_agent_is_rolled_back(
    agent: AgentProcess, remote: Remote, tmp_path: Path
) -> None:
    hash0 = remote.call("get_config", {"id": "before"})["result"]["config_hash"]
    missing = tmp_path / "no-such-fences.geojson"
    result = remote.call(
        "set_config", {"id": "b-1", "changes": {"detect.geofences_file": str(missing)}}
    )
    assert result["ok"] is False
    assert "nothing changed" in result["error"] and "no-such-fences" in result["error"]
    after = remote.call("get_config", {"id": "after"})["result"]
    assert after["config_hash"] == hash0 and after["config"]["detect"]["geofences_file"] == ""
    assert remote.call("ping", {"id": "alive"})["ok"]
    status = agent.status()
    assert all(stage["ok"] for stage in status["stages"].values())


def test_a_command_flood_is_rate_limited_and_the_agent_stays_healthy(
    agent: AgentProcess, remote: Remote, listener: Listener
) -> None:
    for i in range(200):
        remote.send("ping", {"id": f"flood-{i}"})
    deadline = time.monotonic() + 10
    while agent.status()["commands"]["received"] < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    commands = agent.status()["commands"]
    assert commands["received"] >= 200
    assert commands["dropped"] >= 150, commands
    answered = len(remote.results("ping"))
    assert 0 < answered <= 50, answered
    time.sleep(1.0)  # the bucket refills
    assert remote.call("ping", {"id": "after-flood"})["ok"]
    assert all(stage["ok"] for stage in agent.status()["stages"].values())


def test_a_change_the_agent_does_not_survive_is_gone_after_the_watchdog_restart(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener, remote: Remote
) -> None:
    toml = "[health]\nconfirm_s = 3.0\n"
    agent = AgentProcess(tmp_path, mosquitto, extra_toml=toml, env={"TELEMATICS_TEST_HOOKS": "1"})
    try:
        agent.wait_ready()
        assert _births(listener, 1), "subscribed before the first command"
        hash0 = remote.call("get_config", {"id": "before"})["result"]["config_hash"]
        remote.send("set_config", {"id": "fatal", "changes": {"report.moving_interval_s": 3}})
        assert _wait_file(agent.state_dir / "overrides.pending.toml", 5.0)
        agent.signal(signal.SIGUSR2)  # the pipeline stalls inside the confirmation window
        time.sleep(0.5)
        agent.signal(signal.SIGKILL)  # what systemd does when the watchdog runs out
        agent.proc.wait(5)
    finally:
        agent.stop()
    again = AgentProcess(tmp_path, mosquitto, extra_toml=toml)
    try:
        again.wait_ready()
        assert _births(listener, 2)
        got = remote.call("get_config", {"id": "after-restart"})["result"]
        assert got["config_hash"] == hash0
        assert got["config"]["report"]["moving_interval_s"] == 10.0
        assert "discarding remote configuration change" in again.stderr()
        assert not (again.state_dir / "overrides.pending.toml").exists()
        assert not (again.state_dir / "overrides.toml").exists()
    finally:
        again.stop()
    assert not any(r["id"] == "fatal" and r["ok"] for r in remote.results("set_config"))


def test_a_change_after_which_a_driver_stalls_is_rolled_back_while_running(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener, remote: Remote
) -> None:
    """CommandProcessor.tick rolls back a valid change once the agent turns unhealthy.

    No valid configuration breaks a driver by itself, so the test hook SIGRTMIN makes the
    ignition reader's thread hang (inside its next sample) for as long as a change is pending:
    a driver broken by a change. The pipeline and publisher stay alive to answer.
    """
    line = IgnitionLine(tmp_path / "ignition")
    line.set(True)
    agent = AgentProcess(
        tmp_path,
        mosquitto,
        # A long confirmation window: only the stall can end the change inside this test.
        extra_toml="[health]\nconfirm_s = 30.0\n",
        env={"TELEMATICS_TEST_HOOKS": "1"},
        watchdog_usec=3_000_000,  # a stage is stalled after 1.5 s without progress
        line_file=line.path,
    )
    try:
        agent.wait_ready()
        assert _births(listener, 1), "subscribed before the first command"
        assert listener.wait_for(lambda ms: bool(_payloads(ms, "event/ignition_on")), 10.0)
        before = remote.call("get_config", {"id": "before"})["result"]
        remote.send("set_config", {"id": "breaks", "changes": {"report.moving_interval_s": 3}})
        assert _wait_file(agent.state_dir / "overrides.pending.toml", 5.0), "applied, pending"
        assert remote.call("get_config", {"id": "during"})["result"]["config_hash"] != (
            before["config_hash"]
        )
        agent.signal(signal.SIGRTMIN)
        time.sleep(0.3)  # the main thread arms the hook
        line.set(False)  # the reader's next sample hangs its thread

        def answered(ms: list[Any]) -> bool:
            return any(r["id"] == "breaks" for r in remote.results("set_config"))

        assert listener.wait_for(answered, 20.0), agent.stderr()
        result = next(r for r in remote.results("set_config") if r["id"] == "breaks")
        jsonschema.validate(result, RESULT_SCHEMA)
        assert result["ok"] is False, result
        assert "stalled: IgnitionReader" in result["error"], result["error"]
        assert result["error"].endswith("rolled back"), result["error"]
        assert "test hook: stalling the gpio thread" in agent.stderr()

        after = remote.call("get_config", {"id": "after"})["result"]
        assert after["config_hash"] == before["config_hash"]
        assert after["config"]["report"]["moving_interval_s"] == 10.0
        assert not (agent.state_dir / "overrides.pending.toml").exists()
        assert not (agent.state_dir / "overrides.toml").exists()
        # Healthy again: the reader resumed, delivered the sample it held, every stage moves
        # and the watchdog is fed again.
        assert listener.wait_for(lambda ms: bool(_payloads(ms, "event/ignition_off")), 10.0)
        deadline = time.monotonic() + 10.0
        while not all(st["ok"] for st in agent.status()["stages"].values()):
            assert time.monotonic() < deadline, agent.status()["stages"]
            time.sleep(0.2)
        rolled_back_at = time.monotonic()
        assert agent.notify.wait_for(
            lambda r: bool(agent.notify.times("WATCHDOG=1", after=rolled_back_at)), 5.0
        )
        assert remote.call("ping", {"id": "alive"})["ok"]
        assert agent.proc.poll() is None
    finally:
        agent.stop()


def _wait_file(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def _births(listener: Listener, n: int) -> bool:
    """Wait for the n-th online birth: the agent is connected and subscribed to its commands."""
    return listener.wait_for(
        lambda ms: sum(1 for m in ms if m.topic == _topic("state") and m.json()["online"]) >= n,
        15.0,
    )
