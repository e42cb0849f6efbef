"""The shipped mosquitto example (TLS + per-device ACL) against a real mosquitto."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.check import CheckResult, Status, exit_code, run_checks
from simulator.broker import Mosquitto, free_port
from tests.contract import validate_all
from tests.delivery import Van, delivered, mqtt_settings, start_broker
from tests.listener import Received
from tests.pki import CA, Issued, make_ca, make_cert

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "mosquitto.example.conf"
ACL = REPO / "config" / "mosquitto.acl.example"


@dataclass(frozen=True)
class Fleet:
    broker: Mosquitto
    ca: CA
    pki: Path

    def cert(self, cn: str) -> Issued:
        return make_cert(self.ca, self.pki, cn)


def example_conf(port: int, ca: CA, server: Issued, acl: Path) -> str:
    """config/mosquitto.example.conf with test paths and port; everything else as shipped."""
    text = EXAMPLE.read_text()
    subs = {
        r"^listener .*$": f"listener {port} 127.0.0.1",
        r"^cafile .*$": f"cafile {ca.cert_path}",
        r"^certfile .*$": f"certfile {server.cert_path}",
        r"^keyfile .*$": f"keyfile {server.key_path}",
        r"^acl_file .*$": f"acl_file {acl}",
        r"^persistence .*$": "persistence false",
        r"^persistence_location .*$": "",
    }
    for pattern, repl in subs.items():
        text, n = re.subn(pattern, repl, text, flags=re.M)
        assert n == 1 or pattern.startswith("^persistence_"), pattern
    # Started as root, mosquitto would drop to a user that cannot read pytest's temp dirs.
    return "user root\n" + text


@pytest.fixture
def acl_text() -> str:
    return ACL.read_text()


@pytest.fixture
def fleet(tmp_path: Path, acl_text: str) -> Iterator[Fleet]:
    pki = tmp_path / "pki"
    ca = make_ca(pki, "Fleet CA")
    server = make_cert(ca, pki, "broker", server=True)
    acl = tmp_path / "fleet.acl"
    acl.write_text(acl_text)
    port = free_port()
    work = tmp_path / "broker"
    work.mkdir()
    broker = Mosquitto(work, port=port, extra_conf=example_conf(port, ca, server, acl))
    start_broker(broker)
    try:
        yield Fleet(broker, ca, pki)
    finally:
        broker.stop()


class Client:
    """A paho client with a certificate from the fleet CA; records PUBACK reason codes."""

    def __init__(self, fleet: Fleet, cn: str, *, v5: bool = True) -> None:
        cert = fleet.cert(cn)
        self.received: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, ReasonCode] = {}
        self._cond = threading.Condition()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{cn}-{time.time_ns()}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.c.tls_set(str(fleet.ca.cert_path), str(cert.cert_path), str(cert.key_path))
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.granted: list[ReasonCode] = []
        self.c.connect("127.0.0.1", fleet.broker.port)
        self.c.loop_start()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append(msg)
            self._cond.notify_all()

    def _on_publish(self, c: mqtt.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self._cond:
            self.acks[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(
        self, c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode], p: object
    ) -> None:
        with self._cond:
            self.granted.extend(rcs)
            self._cond.notify_all()

    def wait(self, predicate: Callable[[], object], timeout_s: float = 10.0) -> bool:
        assert callable(predicate)
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout_s))

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.c.publish(topic, payload, qos=1)
        assert self.wait(lambda: info.mid in self.acks), f"no PUBACK for {topic}"
        return self.acks[info.mid]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_a_van_cannot_publish_under_another_vans_id(fleet: Fleet) -> None:
    backend = Client(fleet, "backend-ingest")
    backend.c.subscribe("fleet/v1/+/pos", qos=1)
    assert backend.wait(lambda: backend.granted)
    van1 = Client(fleet, "van-1")
    try:
        denied = van1.publish("fleet/v1/van-2/pos", b'{"forged": true}')
        assert denied.is_failure and denied.getName() == "Not authorized"
        own = van1.publish("fleet/v1/van-1/pos", b'{"own": true}')
        assert not own.is_failure
        assert backend.wait(lambda: len(backend.received) >= 1)
        time.sleep(0.3)
        assert [m.topic for m in backend.received] == ["fleet/v1/van-1/pos"]
    finally:
        van1.close()
        backend.close()


def test_with_mqtt_311_the_forged_publish_is_dropped_silently(fleet: Fleet) -> None:
    # 3.1.1 has no way to refuse a PUBLISH: mosquitto acknowledges it and drops it.
    backend = Client(fleet, "backend-ingest")
    backend.c.subscribe("fleet/v1/+/pos", qos=1)
    assert backend.wait(lambda: backend.granted)
    van1 = Client(fleet, "van-1", v5=False)
    try:
        assert not van1.publish("fleet/v1/van-2/pos", b"{}").is_failure
        van1.publish("fleet/v1/van-1/pos", b"{}")
        assert backend.wait(lambda: len(backend.received) >= 1)
        time.sleep(0.3)
        assert [m.topic for m in backend.received] == ["fleet/v1/van-1/pos"]
    finally:
        van1.close()
        backend.close()


def test_a_van_reads_only_its_own_commands(fleet: Fleet) -> None:
    commander = Client(fleet, "backend-commands")
    van1 = Client(fleet, "van-1")
    try:
        van1.c.subscribe("fleet/v1/van-1/cmd/+", qos=1)
        van1.c.subscribe("fleet/v1/van-2/cmd/+", qos=1)
        assert van1.wait(lambda: len(van1.granted) == 2)
        assert not van1.granted[0].is_failure
        commander.publish("fleet/v1/van-2/cmd/ping", b"{}")
        commander.publish("fleet/v1/van-1/cmd/ping", b"{}")
        assert van1.wait(lambda: len(van1.received) >= 1)
        time.sleep(0.3)
        assert [m.topic for m in van1.received] == ["fleet/v1/van-1/cmd/ping"]
    finally:
        van1.close()
        commander.close()


def test_the_agent_delivers_through_the_example_config(fleet: Fleet, tmp_path: Path) -> None:
    cert = fleet.cert("van-1")
    backend = Client(fleet, "backend-ingest")
    backend.c.subscribe("fleet/v1/#", qos=1)
    assert backend.wait(lambda: backend.granted)
    from agent.config import TLSSection

    tls = TLSSection(str(fleet.ca.cert_path), str(cert.cert_path), str(cert.key_path))
    van = Van(tmp_path / "van", mqtt_settings("127.0.0.1", fleet.broker.port, tls=tls))
    try:
        van.drive(150)
        van.park()
        last = van.seq.last_value
        assert backend.wait(lambda: len(delivered(_as_received(backend)).seqs) == last, 15)
    finally:
        van.stop()
        backend.close()
    validate_all(_as_received(backend))


def test_an_agent_with_another_vans_id_is_refused_and_keeps_its_data(
    fleet: Fleet, tmp_path: Path
) -> None:
    from agent.config import TLSSection

    cert = fleet.cert("van-1")
    tls = TLSSection(str(fleet.ca.cert_path), str(cert.cert_path), str(cert.key_path))
    van = Van(
        tmp_path / "van",
        mqtt_settings("127.0.0.1", fleet.broker.port, tls=tls),
        device_id="van-2",
        start=False,
    )
    van.drive(30)
    van.park()
    depth = van.spool.depth()
    van.publisher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not van.publisher.last_error:
            time.sleep(0.05)
        error = van.publisher.last_error
        assert "refused our state topic" in error and "Not authorized" in error, error
        time.sleep(0.5)
        assert van.spool.depth() == depth > 0
    finally:
        van.stop()


def _as_received(client: Client) -> list[Received]:
    with client._cond:
        return [Received(m.topic, bytes(m.payload), bool(m.retain), m.qos) for m in client.received]


@pytest.mark.parametrize(
    "acl_text", [ACL.read_text().replace("pattern write fleet/v1/%u/pos\n", "")]
)
def test_a_refused_publish_stays_in_the_spool_and_is_retried_later(
    fleet: Fleet, tmp_path: Path
) -> None:
    from agent.config import TLSSection

    cert = fleet.cert("van-1")
    tls = TLSSection(str(fleet.ca.cert_path), str(cert.cert_path), str(cert.key_path))
    van = Van(tmp_path / "van", mqtt_settings("127.0.0.1", fleet.broker.port, tls=tls), start=False)
    van.drive(30)
    van.park()
    depth = van.spool.depth()
    van.publisher.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not van.publisher.rejected:
            time.sleep(0.05)
        assert van.publisher.rejected, van.publisher.stats()
        time.sleep(0.5)
        error = van.publisher.last_error
        # mosquitto drops an MQTT 5 client after refused publishes: the error still names the
        # refusal, not just "connection closed".
        assert "rejected a publish on fleet/v1/van-1/pos: Not authorized" in error, error
        assert van.spool.depth() == depth > 0
        # Reconnects keep backing off (max 1 s here): not a tight loop hammering the broker.
        before = van.publisher.reconnects
        time.sleep(1.0)
        assert van.publisher.reconnects - before <= 6, van.publisher.stats()
        assert van.publisher.alive
    finally:
        van.stop()


# --- `telematics-agent check` through the shipped ACL -----------------------------------------

WITHOUT_CHECK = ACL.read_text().replace("pattern readwrite fleet/v1/%u/check\n", "")
WRITE_ONLY_CHECK = ACL.read_text().replace(
    "pattern readwrite fleet/v1/%u/check\n", "pattern write fleet/v1/%u/check\n"
)


def check_config(fleet: Fleet, tmp_path: Path, protocol: str, cn: str = "van-1") -> Path:
    """A van-1 configuration with only the broker to check (GNSS and OBD disabled)."""
    cert = fleet.cert(cn)
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[device]\nid = "van-1"\n[agent]\nstate_dir = "{tmp_path}"\n'
        "[gnss]\nenabled = false\n[obd]\nenabled = false\n"
        f'[mqtt]\nhost = "127.0.0.1"\nport = {fleet.broker.port}\nprotocol = "{protocol}"\n'
        f'[mqtt.tls]\nca_file = "{fleet.ca.cert_path}"\ncert_file = "{cert.cert_path}"\n'
        f'key_file = "{cert.key_path}"\n'
    )
    return path


def broker_item(config: Path, timeout_s: float) -> tuple[int, CheckResult]:
    results = run_checks(config, timeout_s)
    return exit_code(results), next(r for r in results if r.name == "broker")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_check_passes_through_the_shipped_acl(
    fleet: Fleet, tmp_path: Path, protocol: str
) -> None:
    started = time.monotonic()
    rc, item = broker_item(check_config(fleet, tmp_path, protocol), timeout_s=5.0)
    assert item.status is Status.PASS, item
    assert "fleet/v1/van-1/check acknowledged" in item.detail and "delivered back" in item.detail
    assert rc == 0
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("acl_text", [WITHOUT_CHECK, WRITE_ONLY_CHECK], ids=["denied", "write"])
def test_check_over_311_fails_when_the_acl_drops_its_message(fleet: Fleet, tmp_path: Path) -> None:
    # The false pass this replaces: mosquitto acknowledges the refused publish (or delivers
    # nothing the device may not read), so only the missing echo shows the denial.
    rc, item = broker_item(check_config(fleet, tmp_path, "3.1.1"), timeout_s=2.0)
    assert rc == 1
    assert item.status is Status.FAIL, item
    assert "was acknowledged" in item.detail and "never delivered back" in item.detail, item
    assert item.hint.startswith(
        "the broker acknowledged but did not deliver: the ACL denies fleet/v1/van-1/check "
        "for user van-1 (the client certificate's CN)"
    ), item.hint
    assert "pattern readwrite fleet/v1/%u/check" in item.hint


@pytest.mark.parametrize("acl_text", [WITHOUT_CHECK])
def test_check_over_mqtt5_reports_the_refused_publish(fleet: Fleet, tmp_path: Path) -> None:
    started = time.monotonic()
    rc, item = broker_item(check_config(fleet, tmp_path, "5"), timeout_s=5.0)
    assert rc == 1
    assert item.status is Status.FAIL, item
    assert "refused the test publish to fleet/v1/van-1/check: Not authorized" in item.detail
    assert "the ACL denies fleet/v1/van-1/check for user van-1" in item.hint, item.hint
    # The PUBACK says so at once: no waiting out the budget for an echo.
    assert time.monotonic() - started < 4.0


def test_check_with_another_vans_certificate_names_the_identity_the_broker_sees(
    fleet: Fleet, tmp_path: Path
) -> None:
    # Provisioned as van-1 with van-2's certificate: %u is van-2, so van-1's topics are denied.
    rc, item = broker_item(check_config(fleet, tmp_path, "3.1.1", cn="van-2"), timeout_s=2.0)
    assert rc == 1 and item.status is Status.FAIL, item
    assert "for user van-2 (the client certificate's CN)" in item.hint, item.hint
