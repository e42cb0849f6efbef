"""Shared fixtures: a real mosquitto, pseudo-terminals, a temporary state directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.broker import Mosquitto
from simulator.pty import PtyDevice
from tests.listener import Listener


@pytest.fixture(autouse=True)
def listeners_are_contract_checked() -> Iterator[None]:
    """Every listener the test opened and left open is closed here, which validates every message
    it received against the MQTT contract (a violation fails the test at teardown).

    Autouse fixtures are set up first, so this one is torn down after the test's own fixtures,
    ``listener`` included (which closes, and so checks, its listener itself).
    """
    yield
    Listener.close_all()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto on a free loopback port; ``.stop()``/``.start()`` inject an outage."""
    d = tmp_path / "broker"
    d.mkdir()
    broker = Mosquitto(d)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[Listener]:
    """A subscriber to everything on ``mosquitto``; closing it validates all it received."""
    sub = Listener(mosquitto.host, mosquitto.port, "#")
    try:
        yield sub
    finally:
        sub.close()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def pty_device(tmp_path: Path) -> Iterator[PtyDevice]:
    """A plugged pseudo-terminal device behind ``tmp_path/dev0``."""
    dev = PtyDevice(tmp_path / "dev0")
    dev.plug()
    try:
        yield dev
    finally:
        dev.unplug()
