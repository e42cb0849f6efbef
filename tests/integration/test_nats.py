"""The delivery path against NATS's MQTT interface (Debian's nats-server, JetStream on).

NATS speaks MQTT 3.1.1 only: it answers an MQTT 5 CONNECT with CONNACK return code 1, so the
publisher's ``auto`` protocol falls back to 3.1.1 and stays there. Sessions, retained messages
and QoS 1 state live in JetStream, which the server needs enabled (with a ``server_name``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.check import Status, run_checks
from bench.proxy import DelayProxy
from simulator.broker import free_port
from tests.contract import validate_all
from tests.delivery import Van, delivered, mqtt_settings
from tests.listener import Listener

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NATSServer:
    def __init__(self, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()  # the MQTT listener
        self.workdir = workdir
        self.conf = workdir / "nats.conf"
        self.log = workdir / "nats.log"
        self.conf.write_text(
            "server_name: telematics-test\n"
            f"listen: 127.0.0.1:{free_port()}\n"
            f'jetstream {{ store_dir: "{workdir / "js"}" }}\n'
            f'mqtt {{ listen: "127.0.0.1:{self.port}" }}\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([NATS, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not open its MQTT port")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NATSServer]:
    if not Path(NATS).exists():
        pytest.fail("nats-server is not installed (Debian package nats-server)")
    d = tmp_path / "nats"
    d.mkdir()
    server = NATSServer(d)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_delivery_through_nats_mqtt_with_an_outage(nats: NATSServer, tmp_path: Path) -> None:
    listener = Listener(nats.host, nats.port, "fleet/#")
    link = DelayProxy(nats.host, nats.port)
    van = Van(tmp_path / "van", mqtt_settings(link.host, link.port))
    try:
        van.drive(120, real_s=0.5)
        deadline = time.monotonic() + 15
        while van.spool.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert van.publisher.protocol == "3.1.1", "fell back from MQTT 5"
        link.cut()
        van.drive(900)  # 15 minutes in a dead zone
        van.park()
        assert van.spool.depth() > 0
        link.restore()
        last = van.seq.last_value
        assert listener.wait_for(lambda ms: len(delivered(ms).seqs) == last, 20), (
            van.publisher.stats()
        )
    finally:
        van.stop()
        link.close()
    got = delivered(listener.messages)
    assert got.seqs == list(range(1, last + 1))
    assert got.historical >= 9
    validate_all(listener.messages)
    listener.close()
    # Retained messages live in JetStream: a late subscriber still gets state and live.
    late = Listener(nats.host, nats.port, "fleet/v1/van-1/+")
    try:
        assert late.wait_for(
            lambda ms: {m.topic.rsplit("/", 1)[1] for m in ms if m.retain} >= {"state", "live"},
            10,
        ), [(m.topic, m.retain) for m in late.messages]
        state = [m.json() for m in late.messages if m.topic.endswith("/state")][-1]
        assert state["online"] is False
    finally:
        late.close()


def test_forcing_mqtt_5_on_nats_gives_a_clear_error(nats: NATSServer, tmp_path: Path) -> None:
    van = Van(tmp_path / "van", mqtt_settings(nats.host, nats.port, protocol="5"), start=False)
    van.drive(20)
    van.park()
    depth = van.spool.depth()
    van.publisher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not van.publisher.last_error:
            time.sleep(0.05)
        assert "unsupported protocol version" in van.publisher.last_error.lower()
        assert van.publisher.protocol == "5", "no fallback when the config insists on 5"
        assert van.spool.depth() == depth > 0
    finally:
        van.stop()


@pytest.mark.parametrize("protocol", ["auto", "5"])
def test_check_speaks_the_protocol_the_daemon_will(
    nats: NATSServer, tmp_path: Path, protocol: str
) -> None:
    """``check`` falls back from MQTT 5 as the daemon does, within the same timeout."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "van-1"\n[agent]\nstate_dir = "{tmp_path}"\n'
        "[gnss]\nenabled = false\n[obd]\nenabled = false\n"
        f'[mqtt]\nhost = "{nats.host}"\nport = {nats.port}\nprotocol = "{protocol}"\n'
    )
    started = time.monotonic()
    broker = next(r for r in run_checks(config, 5.0) if r.name == "broker")
    assert time.monotonic() - started < 10.0
    if protocol == "auto":
        assert broker.status is Status.PASS, broker
        assert f"connected to {nats.host}:{nats.port} with MQTT 3.1.1" in broker.detail, broker
        assert "delivered back" in broker.detail
    else:  # the configuration insists on 5: the daemon would not fall back either
        assert broker.status is Status.FAIL, broker
        assert "refused the connection" in broker.detail, broker
        assert "unsupported protocol version" in broker.detail.lower(), broker
        assert 'mqtt.protocol = "auto"' in broker.hint, broker
