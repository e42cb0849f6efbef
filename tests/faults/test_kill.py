"""SIGKILL soak: the agent killed at seeded random moments while the broker comes and goes."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agent.sequence import RESERVE
from tests.faults.harness import (
    DEVICE,
    PREFIX,
    AgentProcess,
    SimulatedVan,
    agent_toml,
    missing_runs,
    payloads,
    persistent_broker,
    read_spool,
    received_seqs,
    tracebacks,
    wait_until,
)
from tests.listener import Listener

SEED = 20261120
KILLS = 50
TIME_SCALE = 30.0
GNSS_HZ = 1.0
FLUSH_INTERVAL_S = 5.0  # simulated seconds; positions wait in memory at most this long
# Positions waiting in memory at a kill are the only records allowed to vanish: at most one
# flush window of fixes, plus the fix that closed the window and one being encoded. Each kill
# also skips the rest of the counter's reservation (numbers never handed out to anything).
MAX_GAP_RECORDS = int(FLUSH_INTERVAL_S * GNSS_HZ) + 2


@pytest.mark.slow
def test_sigkill_soak_loses_no_committed_record(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    listener: Listener | None = None
    sim: SimulatedVan | None = None
    agent: AgentProcess | None = None
    state_dir = tmp_path / "state"
    try:
        listener = Listener(
            broker.host, broker.port, f"{PREFIX}/{DEVICE}/#", client_id="fault-soak-listener"
        )
        sim = SimulatedVan(tmp_path / "sim", "urban_delivery", time_scale=TIME_SCALE)
        agent = AgentProcess(
            tmp_path,
            agent_toml(
                state_dir,
                broker,
                gnss_port=sim.gnss,
                obd_port=sim.obd,
                line_file=sim.ignition,
                time_scale=TIME_SCALE,
                flush_interval_s=FLUSH_INTERVAL_S,
                extra="[health]\ninterval_s = 5.0\n",
            ),
        )
        owed: set[int] = set()  # every record some kill found committed and unacknowledged
        outages = 0
        for _ in range(KILLS):
            agent.start()
            first, second = rng.uniform(0.1, 1.6), rng.uniform(0.1, 1.0)
            time.sleep(first)
            if rng.random() < 0.35:
                if broker.running:
                    broker.stop()
                    outages += 1
                else:
                    broker.start()
            time.sleep(second)
            agent.sigkill()
            snap = read_spool(state_dir / "spool" / "data.db")
            assert snap.integrity == "ok", f"spool corrupt after a kill: {snap.integrity}"
            seq_file = state_dir / "seq"
            if snap.seqs:
                next_seq = int(seq_file.read_text())
                assert max(snap.seqs) < next_seq, "a committed seq would be handed out again"
            owed |= snap.seqs
            time.sleep(rng.uniform(0.0, 0.3))

        broker.start()
        final_start = len(listener.messages)
        agent.start()
        assert wait_until(lambda: owed <= set(received_seqs(listener.messages)), 60.0), (
            f"{len(owed - set(received_seqs(listener.messages)))} committed records never"
            f" arrived, e.g. {sorted(owed - set(received_seqs(listener.messages)))[:10]}"
        )
        assert wait_until(lambda: agent.status().get("spool", {}).get("depth") == 0, 30.0)
        assert agent.terminate() == 0  # a clean stop commits the positions still in memory
        final = read_spool(state_dir / "spool" / "data.db")
        assert final.integrity == "ok"
        # ... and, the broker being up, sends them before its goodbye: nothing is left behind,
        # and every position the last run showed on `live` arrives as a durable record.
        assert not final.seqs, f"a clean stop left {len(final.seqs)} records in the spool"

        def said_goodbye() -> bool:
            states = payloads(listener.messages, "state") if listener else []
            return bool(states) and states[-1].get("online") is False

        assert wait_until(said_goodbye, 10.0)
        last_live = {int(p["seq"]) for p in payloads(listener.messages[final_start:], "live")}
        assert wait_until(lambda: last_live <= set(received_seqs(listener.messages)), 10.0), (
            sorted(last_live - set(received_seqs(listener.messages)))[:10]
        )
    finally:
        if agent is not None:
            agent.close()
        if sim is not None:
            sim.close()
        if listener is not None:
            listener.close()
        broker.stop()

    counts = received_seqs(listener.messages)
    runs = missing_runs(counts)
    # A missing seq that went out on `live` was a position lost from memory; one that never
    # appeared anywhere was reserved and never used (at most RESERVE per restart).
    on_live = {int(p["seq"]) for p in payloads(listener.messages, "live")}
    lost = [(first, sum(1 for s in range(first, first + n) if s in on_live)) for first, n in runs]
    too_long = [r for r in lost if r[1] > MAX_GAP_RECORDS]
    assert not too_long, f"records lost beyond the flush window ({MAX_GAP_RECORDS}): {too_long}"
    # Unused reservations: at most one per start (a run may span several quick kills).
    assert sum(n for _, n in runs) <= (KILLS + 1) * (RESERVE + MAX_GAP_RECORDS), runs
    assert sum(n for _, n in lost) <= KILLS * MAX_GAP_RECORDS, lost
    assert outages >= 5, "the seed must exercise broker outages"
    assert (broker.workdir / "db" / "mosquitto.db").exists(), "the broker kept no sessions"
    assert len(counts) > 500, f"too few records for a soak: {len(counts)}"
    assert owed, "the kills never caught a committed, unacknowledged record"
    assert agent.starts == KILLS + 1
    log = agent.stderr()
    assert not tracebacks(log), tracebacks(log)
    assert "is corrupt" not in log, "a spool was quarantined after a kill"


def test_a_seq_seen_on_live_never_names_a_different_record(tmp_path: Path) -> None:
    broker = persistent_broker(tmp_path / "broker")
    broker.start()
    listener: Listener | None = None
    sim: SimulatedVan | None = None
    agent: AgentProcess | None = None
    try:
        listener = Listener(broker.host, broker.port, f"{PREFIX}/{DEVICE}/#", client_id="reuse")
        sim = SimulatedVan(tmp_path / "sim", "highway", time_scale=TIME_SCALE)
        agent = AgentProcess(
            tmp_path,
            agent_toml(
                tmp_path / "state",
                broker,
                gnss_port=sim.gnss,
                time_scale=TIME_SCALE,
                flush_interval_s=120.0,  # 4 s real: positions wait in memory at the kill
            ),
        )
        agent.start()
        live = f"{PREFIX}/{DEVICE}/live"
        assert listener.wait_for(lambda ms: sum(m.topic == live for m in ms) >= 20, 20.0)
        agent.sigkill()  # the positions behind those live messages were never committed
        before = max(received_seqs(listener.messages), default=0)
        agent.start()
        # The second run must publish records of its own before it is stopped.
        assert listener.wait_for(lambda ms: max(received_seqs(ms), default=0) > before + 20, 30.0)
        assert agent.terminate() == 0
    finally:
        if agent is not None:
            agent.close()
        if sim is not None:
            sim.close()
        if listener is not None:
            listener.close()
        broker.stop()

    from agent.encoder import batch_records

    seen_live: dict[int, tuple[str, float, float]] = {}
    durable_records: dict[int, tuple[str, float, float] | None] = {}
    for m in listener.messages:
        if not m.payload:
            continue
        p = m.json()
        if m.topic == live:
            seen_live.setdefault(int(p["seq"]), (p["ts"], p["lat"], p["lon"]))
        elif m.topic.endswith("/pos"):
            for r in batch_records(p):
                durable_records[int(r["seq"])] = (r["ts"], r["lat"], r["lon"])
        elif isinstance(p.get("seq"), int) and not m.topic.endswith(("/state", "/result")):
            durable_records[int(p["seq"])] = None  # an event or health record
    clashes = {
        s: (seen_live[s], durable_records[s])
        for s in seen_live
        if s in durable_records and durable_records[s] != seen_live[s]
    }
    assert not clashes, f"{len(clashes)} seqs name two records: {list(clashes.items())[:3]}"
