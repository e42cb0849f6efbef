"""Mutual TLS against a real mosquitto with a throwaway CA: good and bad certificates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import TLSSection
from simulator.broker import Mosquitto, free_port
from tests.contract import validate_all
from tests.delivery import Van, delivered, mqtt_settings, start_broker
from tests.listener import Listener
from tests.pki import CA, make_ca, make_cert, make_key, mosquitto_tls_conf


@dataclass(frozen=True)
class TLSBroker:
    broker: Mosquitto
    tls_port: int
    ca: CA
    pki: Path


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TLSBroker]:
    pki = tmp_path / "pki"
    ca = make_ca(pki, "Fleet CA")
    server = make_cert(ca, pki, "broker", server=True)
    tls_port, plain_port = free_port(), free_port()
    work = tmp_path / "broker"
    work.mkdir()
    # A second, plain listener on loopback for the test's observer (anonymous allowed there).
    conf = mosquitto_tls_conf(tls_port, ca, server) + (
        f"listener {plain_port} 127.0.0.1\nallow_anonymous true\n"
    )
    broker = Mosquitto(work, port=plain_port, extra_conf="per_listener_settings true\n" + conf)
    start_broker(broker)
    try:
        yield TLSBroker(broker, tls_port, ca, pki)
    finally:
        broker.stop()


def van_tls(tb: TLSBroker, tmp_path: Path, tls: TLSSection, **kw: object) -> Van:
    return Van(tmp_path / "van", mqtt_settings("127.0.0.1", tb.tls_port, tls=tls), **kw)  # type: ignore[arg-type]


def wait_for_error(van: Van, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not van.publisher.last_error:
        time.sleep(0.05)
    return van.publisher.last_error


def test_mutual_tls_connects_and_delivers(tls_broker: TLSBroker, tmp_path: Path) -> None:
    client = make_cert(tls_broker.ca, tls_broker.pki, "van-1")
    observer = Listener("127.0.0.1", tls_broker.broker.port)
    tls = TLSSection(str(tls_broker.ca.cert_path), str(client.cert_path), str(client.key_path))
    van = van_tls(tls_broker, tmp_path, tls)
    try:
        van.drive(120)
        van.park()
        last = van.seq.last_value
        assert observer.wait_for(lambda ms: len(delivered(ms).seqs) == last, 15), (
            van.publisher.stats()
        )
        assert van.publisher.protocol == "5"
    finally:
        van.stop()
        observer.close()
    assert delivered(observer.messages).seqs == list(range(1, last + 1))
    validate_all(observer.messages)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong_ca", "TLS: the broker's certificate is not trusted"),
        ("client_cert_from_another_ca", "TLS: the broker rejected our client certificate"),
        ("expired_client_cert", "TLS: the broker rejected our client certificate"),
        ("key_does_not_match", "TLS: cannot use the client certificate"),
        ("missing_key_file", "TLS: cannot read"),
    ],
)
def test_bad_tls_material_gives_a_clear_error_and_keeps_the_data(
    tls_broker: TLSBroker, tmp_path: Path, case: str, expected: str
) -> None:
    pki = tls_broker.pki
    good = make_cert(tls_broker.ca, pki, "van-1")
    other_ca = make_ca(tmp_path / "other", "Rogue CA")
    ca_file, cert, key = str(tls_broker.ca.cert_path), str(good.cert_path), str(good.key_path)
    if case == "wrong_ca":
        ca_file = str(other_ca.cert_path)
    elif case == "client_cert_from_another_ca":
        rogue = make_cert(other_ca, tmp_path / "other", "van-1")
        cert, key = str(rogue.cert_path), str(rogue.key_path)
    elif case == "expired_client_cert":
        old = make_cert(tls_broker.ca, tmp_path / "old", "van-1", expired=True)
        cert, key = str(old.cert_path), str(old.key_path)
    elif case == "key_does_not_match":
        key = str(make_key(tmp_path, "stray"))
    elif case == "missing_key_file":
        key = str(tmp_path / "nowhere.key")
    van = van_tls(tls_broker, tmp_path, TLSSection(ca_file, cert, key), start=False)
    van.drive(60)
    van.park()
    depth = van.spool.depth()
    van.publisher.start()
    try:
        error = wait_for_error(van)
        assert error.startswith(expected), error
        time.sleep(0.5)  # a retry or two later: still refused, still spooled
        assert van.spool.depth() == depth and depth > 0
        assert not van.publisher.connected
        assert van.publisher.alive
    finally:
        van.stop()


@pytest.mark.parametrize("password, ok", [("s3cret-van", True), ("wrong", False)])
def test_username_and_password_over_tls(tmp_path: Path, password: str, ok: bool) -> None:
    import subprocess

    pki = tmp_path / "pki"
    ca = make_ca(pki, "Fleet CA")
    server = make_cert(ca, pki, "broker", server=True)
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "van-1", "s3cret-van"],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    work = tmp_path / "broker"
    work.mkdir()
    conf = mosquitto_tls_conf(tls_port, ca, server, require_client_cert=False).replace(
        "allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}"
    )
    broker = Mosquitto(work, port=tls_port, extra_conf=conf)
    start_broker(broker)
    settings = mqtt_settings(
        "127.0.0.1", tls_port, username="van-1", tls=TLSSection(str(ca.cert_path))
    )
    from agent.publisher import Publisher

    van = Van(tmp_path / "van", settings, start=False)
    # The daemon reads the password from mqtt.password_file; the publisher takes it as is.
    van.publisher = Publisher(
        settings, van.identity, van.spool, birth=van.state_payload, password=password
    )
    van.drive(30)
    van.park()
    van.publisher.start()
    try:
        if ok:
            deadline = time.monotonic() + 10
            while van.spool.depth() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert van.spool.depth() == 0, van.publisher.stats()
        else:
            error = wait_for_error(van)
            assert error.startswith("broker refused the connection"), error
            assert "not authorized" in error.lower() or "password" in error.lower(), error
            assert van.spool.depth() > 0
    finally:
        van.stop()
        broker.stop()
