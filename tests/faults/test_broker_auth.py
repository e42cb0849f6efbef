"""The broker refusing authentication: a clear error, data kept spooled, delivered once fixed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from simulator.broker import Mosquitto, free_port
from tests.faults.harness import (
    DEVICE,
    PREFIX,
    AgentProcess,
    agent_toml,
    payloads,
    read_spool,
    received_seqs,
    tracebacks,
    wait_until,
)
from tests.listener import Listener

USER = "van-f1"
GOOD = "s3cret-good"
BAD = "s3cret-wrong"


def _broker(workdir: Path) -> tuple[Mosquitto, int]:
    """The agent's port needs a password; a second, anonymous port serves the test listener."""
    passwords = workdir / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), USER, GOOD],
        check=True,
        capture_output=True,
        timeout=10,
    )
    agent_port, listener_port = free_port(), free_port()
    conf = (
        # Started as root, mosquitto would switch users and could not read the password file
        # in pytest's private temporary directory.
        ("user root\n" if os.geteuid() == 0 else "")
        + "per_listener_settings true\n"
        f"listener {agent_port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"listener {listener_port} 127.0.0.1\nallow_anonymous true\n"
    )
    return Mosquitto(workdir, port=agent_port, extra_conf=conf), listener_port


def test_refused_credentials_keep_data_spooled_until_fixed(tmp_path: Path) -> None:
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    broker, listener_port = _broker(broker_dir)
    broker.start()
    listener: Listener | None = None
    agent: AgentProcess | None = None
    secret = tmp_path / "mqtt-password"
    secret.write_text(BAD + "\n")
    state_dir = tmp_path / "state"
    try:
        listener = Listener(broker.host, listener_port, f"{PREFIX}/{DEVICE}/#")
        agent = AgentProcess(
            tmp_path,
            agent_toml(
                state_dir,
                broker,
                mqtt_extra=f'username = "{USER}"\npassword_file = "{secret}"\n',
                extra="[health]\ninterval_s = 5.0\n",
            ),
        )
        agent.start()
        assert wait_until(lambda: "broker refused the connection" in agent.stderr(), 20.0), (
            agent.stderr()
        )
        # Health records keep being committed while the broker says no.
        assert wait_until(lambda: agent.status().get("spool", {}).get("depth", 0) >= 2, 20.0)
        status = agent.status()
        assert status["mqtt"]["connected"] is False
        assert "refused" in status["mqtt"]["last_error"], status["mqtt"]
        assert all(stage["ok"] for stage in status["stages"].values()), status["stages"]
        assert agent.running
        assert not payloads(listener.messages, "health"), "nothing got through with a bad password"
        assert agent.terminate() == 0
        owed = read_spool(state_dir / "spool" / "data.db").seqs
        assert len(owed) >= 2

        secret.write_text(GOOD + "\n")  # the technician fixes the password and restarts
        agent.start()
        assert listener.wait_for(lambda ms: owed <= set(received_seqs(ms)), 20.0), (
            "spooled records missing after the fix:"
            f" {sorted(owed - set(received_seqs(listener.messages)))}"
        )
        assert agent.terminate() == 0
    finally:
        if agent is not None:
            agent.close()
        if listener is not None:
            listener.close()
        broker.stop()
    log = agent.stderr()
    refusals = [line for line in log.splitlines() if "broker refused the connection" in line]
    assert refusals and all(line.startswith("ERROR") for line in refusals), refusals
    assert len(refusals) <= 3, "the same refusal is logged once per change, not per retry"
    assert BAD not in log and GOOD not in log, "a password reached the log"
    assert not tracebacks(log), tracebacks(log)
