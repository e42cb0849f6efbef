"""Store-and-forward against a real mosquitto: outages, recovery, kill -9 mid-drain, lanes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.encoder import batch_records
from agent.spool import DB_FILE
from bench.proxy import DelayProxy
from simulator.broker import Mosquitto
from tests.contract import validate_all
from tests.delivery import Van, delivered, mqtt_settings, wait_listening
from tests.listener import Listener, Received

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def link(mosquitto: Mosquitto) -> Iterator[DelayProxy]:
    """The van's cellular link to the broker: a relay the test can cut."""
    proxy = DelayProxy(mosquitto.host, mosquitto.port)
    try:
        yield proxy
    finally:
        proxy.close()


def wait_until(predicate: object, timeout_s: float) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.mark.parametrize("encoding", ["json", "zlib"])
def test_broker_outage_over_an_hour_of_driving_then_recovery(
    tmp_path: Path,
    mosquitto: Mosquitto,
    listener: Listener,
    link: DelayProxy,
    encoding: str,
) -> None:
    # Batches close after 60 s of driving (the default 10 s means 360 fsync'd commits an hour:
    # realistic, and slow on a shared CI disk without proving more).
    van = Van(
        tmp_path / "van",
        mqtt_settings(link.host, link.port),
        encoding=encoding,
        flush_interval_s=60.0,
    )
    try:
        van.drive(300, real_s=0.25)  # five minutes with the broker up
        assert wait_until(lambda: van.spool.depth() == 0, 10)

        mosquitto.stop()
        link.cut()
        van.drive(3600, real_s=2.0)  # an hour in a dead zone, scaled x1800
        assert van.spool.depth() >= 36, "the hour waits in the spool"
        assert not van.publisher.connected

        mosquitto.start()
        wait_listening(listener, mosquitto.host, mosquitto.port)
        link.restore()
        van.drive(300, real_s=0.25)  # five more minutes after recovery
        van.park()
        last = van.seq.last_value
        assert wait_until(lambda: van.spool.depth() == 0, 30), van.publisher.stats()
        assert listener.wait_for(lambda ms: max(delivered(ms).seqs, default=0) >= last, 10)
    finally:
        van.stop()

    got = delivered(listener.messages)
    # Every record and event once after dedup by (device_id, seq), contiguous from 1.
    assert got.seqs == list(range(1, last + 1))
    assert van.events == 14
    assert got.historical >= 36, "the backlog went out marked historical"
    # Duplicates only from batches in flight when a link dropped (60 records each at most).
    assert got.duplicates <= van.publisher.requeued * 60
    # The retained live position is the newest record; state says offline after the stop.
    live = [m for m in listener.on_topic("/live") if m.payload]
    newest_pos = max(r["seq"] for r in batch_records(listener.on_topic("/pos")[-1].json()))
    assert live and live[-1].json()["seq"] == newest_pos
    states = [m.json()["online"] for m in listener.on_topic("/state")]
    assert states[0] is True and states[-1] is False
    assert validate_all(listener.messages) > 40


def test_backlog_drains_oldest_first_and_marked_historical(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener, link: DelayProxy
) -> None:
    link.cut()
    van = Van(tmp_path / "van", mqtt_settings(link.host, link.port), max_batch_records=10)
    try:
        van.drive(200)
        van.park()
        link.restore()
        assert wait_until(lambda: van.spool.depth() == 0, 20)
        van.drive(20, real_s=0.5)
        van.park()
        assert wait_until(lambda: van.spool.depth() == 0, 10)
        assert listener.wait_for(
            lambda ms: len([m for m in ms if m.topic.endswith("/pos")]) >= 22, 10
        )
    finally:
        van.stop()
    batches = [m.json() for m in listener.on_topic("/pos")]
    firsts = [b["seq"] for b in batches]
    assert firsts == sorted(firsts), "history drains oldest first"
    assert all(b["historical"] for b in batches[:20])
    assert not any(b["historical"] for b in batches[-2:]), "live-edge batches are not historical"


KILLS = 2


def test_kill_9_mid_drain_then_restart_delivers_the_rest(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    state = tmp_path / "van"
    offline = Van(state, mqtt_settings("127.0.0.1", 1), max_batch_records=10, start=False)
    offline.drive(1200)
    offline.park()
    last = offline.seq.last_value
    total = offline.spool.depth()
    offline.spool.close()
    assert total >= 120

    def positions_reach(t: int) -> Callable[[list[Received]], bool]:
        return lambda ms: len([m for m in ms if "/pos" in m.topic]) >= t

    # A 100 ms round trip and 5 in flight: the drain takes seconds, so the kill lands mid-way.
    slow = DelayProxy(mosquitto.host, mosquitto.port, rtt_s=0.1)
    try:
        for round_ in range(KILLS + 1):
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.delivery",
                    "drain",
                    str(state),
                    slow.host,
                    str(slow.port),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
            )
            try:
                if round_ < KILLS:
                    target = (round_ + 1) * total // (KILLS + 2)
                    assert listener.wait_for(positions_reach(target), 60)
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    with sqlite3.connect(state / "spool" / DB_FILE) as conn:
                        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                else:
                    assert listener.wait_for(
                        lambda ms: (
                            max(delivered(ms).seqs, default=0) >= last
                            and len(delivered(ms).seqs) == last
                        ),
                        60,
                    ), f"{len(delivered(listener.messages).seqs)} of {last}"
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
    finally:
        slow.close()
    got = delivered(listener.messages)
    assert got.seqs == list(range(1, last + 1)), "nothing committed is lost"
    # Re-sent at most what was in flight at each kill (5 batches of 10 records) plus a margin
    # for PUBACKs that were on their way back.
    assert got.duplicates <= KILLS * 10 * 10
    validate_all(listener.messages)


def test_stop_publishes_offline_and_the_will_covers_a_crash(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    van = Van(tmp_path / "van", mqtt_settings(mosquitto.host, mosquitto.port))
    assert wait_until(lambda: van.publisher.connected, 10)
    van.drive(5)
    van.stop()
    assert listener.wait_for(
        lambda ms: [m.json()["online"] for m in ms if m.topic.endswith("/state")] == [True, False],
        10,
    )
    validate_all(listener.messages)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_persistent_session_delivers_commands_sent_while_offline(
    tmp_path: Path, mosquitto: Mosquitto, link: DelayProxy, protocol: str
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[tuple[str, bytes]] = []
    van = Van(
        tmp_path / "van",
        mqtt_settings(link.host, link.port, protocol=protocol),
        on_command=lambda name, body: got.append((name, body)),
    )
    try:
        assert wait_until(lambda: van.publisher.connected, 10)
        time.sleep(0.3)  # let the SUBACK come back
        link.cut()
        assert wait_until(lambda: not van.publisher.connected, 10)
        backend = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="backend-cmd")
        backend.connect(mosquitto.host, mosquitto.port)
        backend.loop_start()
        backend.publish("fleet/v1/van-1/cmd/ping", b'{"id": "c-1"}', qos=1).wait_for_publish(5)
        backend.loop_stop()
        backend.disconnect()
        link.restore()
        assert wait_until(lambda: got, 15), "the broker kept the command for the session"
        assert got == [("ping", b'{"id": "c-1"}')]
    finally:
        van.stop()


def test_live_lane_can_be_throttled_without_losing_history(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    van = Van(
        tmp_path / "van",
        mqtt_settings(mosquitto.host, mosquitto.port, live_min_interval_s=0.5),
        flush_interval_s=5.0,
    )
    try:
        assert wait_until(lambda: van.publisher.connected, 10)
        van.drive(60, real_s=1.5)  # 40 records a second, live at most twice a second
        van.park()
        last_pos = van.seq.last_value
        assert listener.wait_for(lambda ms: len(delivered(ms).seqs) == last_pos, 10)
        time.sleep(0.6)  # the newest position goes out once the interval has passed
    finally:
        van.stop()
    live = [m.json() for m in listener.on_topic("/live") if m.payload]
    assert 2 <= len(live) <= 6, len(live)
    assert live[-1]["seq"] == 60, "the newest position still reaches the live topic"
    validate_all(listener.messages)


def test_the_brokers_receive_maximum_narrows_the_window(tmp_path: Path) -> None:
    from simulator.broker import free_port

    work = tmp_path / "broker"
    work.mkdir()
    port = free_port()
    # mosquitto advertises max_inflight_messages as its MQTT 5 Receive Maximum.
    broker = Mosquitto(
        work,
        port=port,
        extra_conf=f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 7\n",
    )
    broker.start()
    listener = Listener(broker.host, broker.port, "#")
    van = Van(
        tmp_path / "van", mqtt_settings(broker.host, broker.port), start=False, max_batch_records=5
    )
    try:
        van.drive(300)
        van.park()
        van.publisher.start()
        peak = 0
        deadline = time.monotonic() + 20
        while van.spool.depth() and time.monotonic() < deadline:
            peak = max(peak, van.publisher.inflight)
            time.sleep(0.001)
        assert van.spool.depth() == 0
        assert van.publisher.window == 7
        assert peak <= 7
        assert len(delivered(listener.messages).seqs) == van.seq.last_value
    finally:
        van.stop()
        listener.close()
        broker.stop()
