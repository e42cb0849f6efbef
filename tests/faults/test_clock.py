"""Clock jumps mid-drive: the system clock back and forth, the receiver's UTC back and forth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from simulator.broker import Mosquitto
from simulator.ignition import IgnitionLine
from tests.faults.harness import (
    AgentProcess,
    FaultyReceiver,
    agent_toml,
    durable,
    payloads,
    record_seqs,
    tracebacks,
)
from tests.listener import Listener, Received

TIME_SCALE = 30.0
SCENARIO_START = dt.datetime(2026, 3, 2, 7, 30, tzinfo=dt.UTC)  # urban_delivery's start_utc
DAY_S = 86400.0


def _ts(payload: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(payload["ts"]).replace("Z", "+00:00"))


def _ignition_events(messages: list[Received]) -> list[dict[str, Any]]:
    return payloads(messages, "event/ignition_on") + payloads(messages, "event/ignition_off")


def _durations(value: Any, key: str = "") -> list[tuple[str, float]]:
    """Every number under a key that names a duration, anywhere in an event's data."""
    out: list[tuple[str, float]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _durations(v, k)
    elif isinstance(value, list):
        for v in value:
            out += _durations(v, key)
    elif isinstance(value, (int, float)) and key.endswith("_s"):
        out.append((key, float(value)))
    return out


def test_clock_jumps_never_reorder_duplicate_or_skew_records(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    offset_file = tmp_path / "wall-offset"
    offset_file.write_text("0\n")
    line = IgnitionLine(tmp_path / "ignition")
    line.set(False)
    receiver = FaultyReceiver(tmp_path / "gnss0", "urban_delivery", time_scale=TIME_SCALE)
    config = agent_toml(
        tmp_path / "state",
        mosquitto,
        gnss_port=str(tmp_path / "gnss0"),  # nothing there yet: no fix, system time only
        line_file=str(line.path),
        time_scale=TIME_SCALE,
        flush_interval_s=5.0,
    )
    agent = AgentProcess(
        tmp_path,
        config,
        module_args=["tests.faults.clockjump", str(tmp_path / "agent.toml"), str(offset_file)],
    )
    msgs = listener.messages
    level = False

    def toggle_and_get_event() -> dict[str, Any]:
        nonlocal level
        level = not level
        seen = len(_ignition_events(msgs))
        line.set(level)
        assert listener.wait_for(lambda ms: len(_ignition_events(ms)) > seen, 15.0), (
            agent.stderr()[-2000:]
        )
        return max(_ignition_events(msgs), key=lambda p: int(p["seq"]))

    try:
        agent.start()
        # 1. No fix yet: records carry the system time, and say so; they follow its jumps.
        for offset_s in (0.0, -DAY_S, 2 * DAY_S, -3 * DAY_S):
            offset_file.write_text(f"{offset_s}\n")
            event = toggle_and_get_event()
            assert event["time_source"] == "system", event
            expected = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
            assert abs((_ts(event) - expected).total_seconds()) < 30, (offset_s, event["ts"])

        # 2. With a fix, record times come from GNSS: system clock jumps no longer reach them.
        receiver.start()
        assert listener.wait_for(
            lambda ms: any(
                r.get("time_source", "gnss") == "gnss"
                for p in payloads(ms, "pos")
                for r in p["records"]
            ),
            20.0,
        ), agent.stderr()[-2000:]
        for offset_s in (-3600.0, 10 * DAY_S, -400 * DAY_S):
            offset_file.write_text(f"{offset_s}\n")
            event = toggle_and_get_event()
            assert event["time_source"] == "gnss", event
            # On the receiver's time line: between its start and its "now" (plus a second).
            latest = SCENARIO_START + dt.timedelta(seconds=receiver.live.now_s() + TIME_SCALE)
            assert SCENARIO_START <= _ts(event) <= latest, (offset_s, event["ts"])

        # 3. The receiver's own UTC jumps back an hour, then forward again.
        for utc_offset_s in (-3600.0, 0.0):
            batches_before = len(payloads(msgs, "pos"))
            receiver.utc_offset_s = utc_offset_s

            def follows(
                ms: list[Received], offset_s: float = utc_offset_s, first: int = batches_before
            ) -> bool:
                lo = SCENARIO_START + dt.timedelta(seconds=offset_s)
                hi = lo + dt.timedelta(seconds=receiver.live.now_s() + TIME_SCALE)
                return any(
                    lo <= _ts(r) <= hi
                    for p in payloads(ms, "pos")[first:]
                    for r in p["records"]
                )

            assert listener.wait_for(follows, 20.0), (
                f"records do not follow the receiver's UTC ({utc_offset_s:+.0f} s)"
            )
            toggle_and_get_event()
        assert agent.terminate() == 0
        assert listener.wait_for(
            lambda ms: any(p.get("online") is False for p in payloads(ms, "state")), 10.0
        )
    finally:
        agent.close()
        receiver.close()

    records = durable(msgs)
    all_seqs = [s for p in records for s in record_seqs(p)]
    assert len(all_seqs) == len(set(all_seqs)), "a seq was used twice"
    for kind in ("pos", "health", "event/ignition_on"):
        firsts = [p["seq"] for p in payloads(msgs, kind)]
        assert firsts == sorted(firsts), f"{kind} out of seq order: {firsts}"
    for p in payloads(msgs, "pos"):
        inner = [int(r["seq"]) for r in p["records"]]
        assert inner == sorted(inner) and inner[0] == p["seq"] and inner[-1] == p["seq_last"]
    events = [p for p in records if str(p.get("schema", "")).startswith("event/")]
    negative = [(p["type"], k, v) for p in events for k, v in _durations(p.get("data")) if v < 0]
    assert not negative, f"negative durations: {negative}"
    uptimes = [float(h["uptime_s"]) for h in payloads(msgs, "health")]
    assert uptimes == sorted(uptimes), "uptime follows the monotonic clock"
    log = agent.stderr()
    assert not tracebacks(log), tracebacks(log)
