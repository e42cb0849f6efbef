"""Spool budget nearly exhausted: positions are evicted and counted, events are all kept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    DEVICE,
    PREFIX,
    AgentProcess,
    SimulatedVan,
    agent_toml,
    payloads,
    read_spool,
    received_seqs,
    tracebacks,
    wait_until,
)
from tests.faults.harness import persistent_broker as make_broker
from tests.listener import Listener

MAX_BYTES = 65536  # the smallest budget the configuration accepts
TIME_SCALE = 30.0


def _event_seqs(listener: Listener) -> set[int]:
    base = f"{PREFIX}/{DEVICE}/event/"
    return {int(m.json()["seq"]) for m in listener.messages if m.topic.startswith(base)}


@pytest.mark.slow
def test_full_spool_evicts_positions_keeps_events_and_never_stops(tmp_path: Path) -> None:
    broker = make_broker(tmp_path / "broker")
    broker.start()
    listener: Listener | None = None
    sim: SimulatedVan | None = None
    agent: AgentProcess | None = None
    state_dir = tmp_path / "state"
    try:
        listener = Listener(broker.host, broker.port, f"{PREFIX}/{DEVICE}/#", client_id="budget")
        broker.stop()  # the van drives out of coverage before the agent even starts
        sim = SimulatedVan(tmp_path / "sim", "urban_delivery", time_scale=TIME_SCALE, gnss_hz=5)
        agent = AgentProcess(
            tmp_path,
            agent_toml(
                state_dir,
                broker,
                gnss_port=sim.gnss,
                obd_port=sim.obd,
                line_file=sim.ignition,
                time_scale=TIME_SCALE,
                flush_interval_s=2.0,
                spool_extra=f"max_bytes = {MAX_BYTES}\n",
                extra="[health]\ninterval_s = 5.0\n",
            ),
        )
        agent.start()

        def spool() -> dict[str, int]:
            return dict(agent.status().get("spool", {})) if agent else {}

        assert wait_until(lambda: spool().get("evicted_positions", 0) >= 20, 60.0), (
            f"no evictions: {spool()}\n{agent.stderr()[-2000:]}"
        )
        time.sleep(3.0)  # keep evicting for a while: the agent must not stop or stall
        full = spool()
        assert agent.running
        assert full["evicted_events"] == 0, full
        assert full["bytes"] <= MAX_BYTES, full
        assert agent.status()["stages"]["pipeline"]["ok"] is True

        broker.start()
        assert wait_until(lambda: spool().get("depth") == 0, 60.0), spool()
        assert agent.terminate() == 0
        left = read_spool(state_dir / "spool" / "data.db")
        assert left.integrity == "ok"
        events_detected = int(agent.status()["pipeline"]["events"])
        # Events sent at the very end may still be on their way to the listener.
        wait_until(lambda: len(_event_seqs(listener)) + left.rows >= events_detected, 10.0)
    finally:
        if agent is not None:
            agent.close()
        if sim is not None:
            sim.close()
        if listener is not None:
            listener.close()
        broker.stop()

    assert events_detected >= 2, "the drive must produce events (ignition_on, trip_start)"
    # Every detected event was delivered, or is still in the spool after the clean stop.
    assert len(_event_seqs(listener)) + left.rows >= events_detected, (
        f"{events_detected} events detected, {len(_event_seqs(listener))} delivered,"
        f" {left.rows} entries left in the spool"
    )
    health = payloads(listener.messages, "health")
    evicted = [h["spool"]["evicted_positions"] for h in health]
    assert max(evicted) >= 20, f"evictions not reported in health: {evicted}"
    assert all(h["spool"]["evicted_events"] == 0 for h in health)
    seqs = received_seqs(listener.messages)
    assert max(seqs) - len(seqs) > 100, "evicted positions leave gaps in seq"
    log = agent.stderr()
    assert "spool full" in log
    assert not tracebacks(log), tracebacks(log)
