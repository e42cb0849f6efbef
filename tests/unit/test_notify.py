"""sd_notify over real AF_UNIX datagram sockets: filesystem and abstract addresses."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import Notifier, send_datagram


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    # A short path: AF_UNIX addresses are limited to 108 bytes, pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    path = d / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield str(path), sock
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        d.rmdir()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"telematics-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        yield "@" + name, sock
    finally:
        sock.close()


def test_plain_datagram_lifecycle(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("starting up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=starting up"
    assert n.status("fix 3 s ago;\nspool 2")
    assert sock.recv(4096) == b"STATUS=fix 3 s ago; spool 2"
    assert not n.status("fix 3 s ago; spool 2"), "an unchanged STATUS is not re-sent"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert n.sent == 4


def test_abstract_socket_address(abstract_socket: tuple[str, socket.socket]) -> None:
    name, sock = abstract_socket
    assert send_datagram(name, "READY=1")
    assert sock.recv(4096) == b"READY=1"


def test_systemd_python_path_reaches_the_same_socket(
    notify_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("systemd.daemon")
    path, sock = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier()  # reads os.environ, so systemd-python is used
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert os.environ["NOTIFY_SOCKET"] == path, "the variable must survive for later messages"


def test_without_systemd_everything_is_a_quiet_no_op() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert n.watchdog_interval_s is None


def test_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ready()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "banana"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(
    env: dict[str, str], interval: float | None
) -> None:
    assert Notifier(env).watchdog_interval_s == interval
