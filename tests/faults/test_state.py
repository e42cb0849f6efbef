"""State faults at start: a corrupted spool file, a read-only state directory or spool file.

Tests run as root, which ignores file modes; the agent is started under ``setpriv`` without
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH so the modes apply to it as to the service user.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from simulator.broker import Mosquitto
from tests.faults.harness import (
    AgentProcess,
    agent_toml,
    payloads,
    read_spool,
    tracebacks,
    wait_until,
)
from tests.listener import Listener

# Not root: file modes already apply, nothing to drop. setpriv comes with util-linux.
WITHOUT_DAC = (
    [
        shutil.which("setpriv") or "/usr/bin/setpriv",
        "--inh-caps=-dac_override,-dac_read_search",
        "--bounding-set=-dac_override,-dac_read_search",
    ]
    if os.geteuid() == 0
    else []
)


def _health_config(state_dir: Path, broker: Mosquitto) -> str:
    return agent_toml(state_dir, broker, extra="[health]\ninterval_s = 5.0\n")


def _seed_spool(tmp_path: Path, broker: Mosquitto, listener: Listener) -> AgentProcess:
    """Run an agent long enough to leave a real spool with one health record delivered."""
    agent = AgentProcess(tmp_path, _health_config(tmp_path / "state", broker))
    agent.start()
    try:
        assert listener.wait_for(lambda ms: bool(payloads(ms, "health")), 20.0), agent.stderr()
        assert agent.terminate() == 0
    finally:
        agent.close()
    return agent


def test_corrupted_spool_file_is_quarantined_and_new_data_delivered(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    _seed_spool(tmp_path, mosquitto, listener)
    db = tmp_path / "state" / "spool" / "data.db"
    size = db.stat().st_size
    with open(db, "r+b") as f:  # garbage over the header and the first pages
        f.write(os.urandom(min(size, 8192)))
    agent = AgentProcess(tmp_path, _health_config(tmp_path / "state", mosquitto))
    seen = len(payloads(listener.messages, "health"))
    agent.start()
    try:
        assert listener.wait_for(lambda ms: len(payloads(ms, "health")) > seen, 20.0), (
            agent.stderr()[-3000:]
        )
        assert agent.running
        assert wait_until(lambda: agent.status().get("spool", {}).get("quarantined") == 1, 10.0)
        assert agent.terminate() == 0
    finally:
        agent.close()
    kept = list(db.parent.glob("data.db.corrupt-*"))
    assert kept, "the damaged file is kept for inspection"
    assert read_spool(db).integrity == "ok"
    log = agent.stderr()
    assert "is corrupt" in log and "starting an empty spool" in log
    assert not tracebacks(log), tracebacks(log)


def test_read_only_state_directory_is_a_clear_error_at_start(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o555)
    agent = AgentProcess(tmp_path, _health_config(state, mosquitto), wrapper=WITHOUT_DAC)
    agent.start()
    try:
        rc = agent.wait_exit(20.0)
    finally:
        agent.close()
        state.chmod(0o755)
    log = agent.stderr()
    assert rc == 1, log
    assert "cannot create the spool directory" in log and str(state) in log, log
    assert "Permission denied" in log
    assert not tracebacks(log), tracebacks(log)


@pytest.mark.parametrize("what", ["directory", "file"])
def test_read_only_spool_is_not_mistaken_for_a_corrupt_one(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener, what: str
) -> None:
    _seed_spool(tmp_path, mosquitto, listener)
    spool = tmp_path / "state" / "spool"
    size = (spool / "data.db").stat().st_size
    targets = [tmp_path / "state", spool] if what == "directory" else [spool / "data.db"]
    for t in targets:
        t.chmod(0o555 if t.is_dir() else 0o444)
    config = _health_config(tmp_path / "state", mosquitto)
    agent = AgentProcess(tmp_path, config, wrapper=WITHOUT_DAC)
    agent.start()
    try:
        rc = agent.wait_exit(20.0)
    finally:
        agent.close()
        for t in targets:
            t.chmod(0o755 if t.is_dir() else 0o644)
    log = agent.stderr()
    # A spool the agent cannot write is not damaged: moving it aside would strand its backlog.
    assert (spool / "data.db").stat().st_size == size, "the spool file was replaced"
    assert not list(spool.glob("*corrupt*")), "the spool file was moved aside"
    assert "corrupt" not in log, log
    assert rc == 1, log
    assert "cannot open the spool" in log and "readonly" in log, log
    assert not tracebacks(log), tracebacks(log)
