"""Device faults: receiver and adapter unplugged and replugged, garbage floods, babbling adapter."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from simulator.broker import Mosquitto
from tests.faults.harness import (
    AgentProcess,
    FaultyReceiver,
    agent_toml,
    elm327_server,
    payloads,
    tracebacks,
)
from tests.listener import Listener, Received

TIME_SCALE = 30.0
SEED = 10
CYCLES = 3
LINK_EVENTS = ("gnss_lost", "gnss_regained", "obd_lost", "obd_regained")


def _events(messages: list[Received], kind: str) -> list[dict[str, Any]]:
    return payloads(messages, f"event/{kind}")


def _link(messages: list[Received], device: str) -> str | None:
    """The newest health record's view of a device link."""
    health = payloads(messages, "health")
    for h in reversed(health):
        if device in h and "link" in h[device]:
            return str(h[device]["link"])
    return None


def _counters(messages: list[Received]) -> dict[str, dict[str, int]]:
    """The newest health record's driver counters (what a fleet backend sees of line noise)."""
    newest = payloads(messages, "health")[-1]
    return {d: dict(newest.get(d, {}).get("counters", {})) for d in ("gnss", "obd")}


def _samples(agent: AgentProcess) -> int:
    return int(agent.status().get("pipeline", {}).get("samples", -1))


def _flood(device: Any, stop: threading.Event, rng: random.Random, sent: list[int]) -> None:
    """Random bytes into the adapter's line as fast as the pseudo-terminal takes them."""
    while not stop.is_set():
        sent[0] += device.write(rng.randbytes(512))
        stop.wait(0.002)


@pytest.mark.slow
def test_unplug_replug_floods_and_a_babbling_adapter(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    rng = random.Random(SEED)
    receiver = FaultyReceiver(tmp_path / "gnss0", "urban_delivery", time_scale=TIME_SCALE)
    adapter = elm327_server(tmp_path / "obd0", receiver)
    agent = AgentProcess(
        tmp_path,
        agent_toml(
            tmp_path / "state",
            mosquitto,
            gnss_port=str(tmp_path / "gnss0"),
            obd_port=str(tmp_path / "obd0"),
            time_scale=TIME_SCALE,
        ),
    )
    stop_flood = threading.Event()
    flood_thread: threading.Thread | None = None
    try:
        receiver.start()
        adapter.start()
        agent.start()
        msgs = listener.messages

        def both(state: str) -> bool:
            return _link(msgs, "gnss") == state and _link(msgs, "obd") == state

        assert listener.wait_for(lambda ms: both("up"), 30.0), agent.stderr()[-3000:]

        # 1. Both devices pulled out and put back, again and again.
        for cycle in range(1, CYCLES + 1):
            receiver.unplug()
            adapter.unplug()
            assert listener.wait_for(lambda ms: both("down"), 15.0), f"cycle {cycle}: down"
            # Down for 1-2 s real (30-60 s simulated): beyond the 10 s reporting threshold.
            time.sleep(rng.uniform(1.0, 2.0))
            receiver.replug()
            adapter.replug()
            assert listener.wait_for(lambda ms: both("up"), 30.0), f"cycle {cycle}: up again"
            assert agent.running
        def every_unplug_reported(ms: list[Received]) -> bool:
            return all(len(_events(ms, k)) >= CYCLES for k in LINK_EVENTS)

        assert listener.wait_for(every_unplug_reported, 10.0), {
            k: len(_events(msgs, k)) for k in LINK_EVENTS
        }

        # 2. Garbage floods on both lines at once.
        receiver.flood_bytes = 4096
        flooded = [0]
        flood_thread = threading.Thread(
            target=_flood, args=(adapter.device, stop_flood, random.Random(SEED), flooded)
        )
        flood_thread.start()
        time.sleep(4.0)
        assert agent.running, agent.stderr()[-3000:]
        stop_flood.set()
        flood_thread.join(5.0)
        receiver.flood_bytes = 0
        assert receiver.flooded > 100_000 and flooded[0] > 100_000, (receiver.flooded, flooded)
        before = _samples(agent)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and _samples(agent) < before + 100:
            time.sleep(0.2)
        assert _samples(agent) >= before + 100, "samples did not resume after the floods"
        assert listener.wait_for(lambda ms: both("up"), 30.0), "links back after the floods"

        # 3. The adapter answers nonsense to everything, then recovers.
        obd_lost = len(_events(msgs, "obd_lost"))
        adapter.babbling = True
        assert listener.wait_for(lambda ms: _link(ms, "obd") == "down", 20.0), (
            "a babbling adapter must not count as a working OBD link"
        )
        assert listener.wait_for(lambda ms: len(_events(ms, "obd_lost")) > obd_lost, 15.0)
        assert agent.running
        assert _link(msgs, "gnss") == "up", "GNSS is unaffected by the adapter"
        adapter.babbling = False
        assert listener.wait_for(lambda ms: _link(ms, "obd") == "up", 30.0), (
            "OBD back once the adapter talks sense"
        )
        counters = _counters(msgs)
        assert counters["gnss"].get("garbage_bytes", 0) > 100_000, counters["gnss"]
        assert counters["gnss"].get("reconnects", 0) >= CYCLES, counters["gnss"]
        assert counters["obd"].get("garbage", 0) > 0, counters["obd"]
        assert counters["obd"].get("reconnects", 0) >= CYCLES, counters["obd"]
        assert agent.terminate() == 0
    finally:
        stop_flood.set()
        if flood_thread is not None:
            flood_thread.join(5.0)
        agent.close()
        adapter.stop()
        receiver.close()
    log = agent.stderr()
    assert not tracebacks(log), tracebacks(log)
    assert agent.starts == 1, "the agent never had to be restarted"
