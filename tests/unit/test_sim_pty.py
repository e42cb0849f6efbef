"""The pty device as a UART: the reader's speed seen from the device, and a mismatch garbles."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import select
import termios
import time
from collections.abc import Iterator
from functools import reduce
from operator import xor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.nmea import Epoch, Satellite, Talker, encode_epoch, frame
from simulator.pty import PtyDevice, misread

BAUDS = (4800, 9600, 19200, 38400, 57600, 115200)
EPOCH = Epoch(
    utc=dt.datetime(2026, 3, 2, 7, 0, 0, tzinfo=dt.UTC),
    fix=True,
    lat=51.34,
    lon=12.37,
    alt_m=110.0,
    speed_knots=25.0,
    course_deg=90.0,
    used_prns=(2, 5, 7, 9, 13),
    hdop=0.9,
    pdop=1.5,
    vdop=1.2,
    satellites=tuple(Satellite(p, 40, 90, 40) for p in (2, 5, 7, 9, 13)),
)
NMEA = "".join(frame(body) for body in encode_epoch(Talker.GP, EPOCH)).encode()
SENTENCE = re.compile(rb"\$([^$*\r\n]*)\*([0-9A-F]{2})")


def good_sentences(data: bytes) -> list[bytes]:
    """Checksummed sentences in ``data`` whose checksum is right (what a reader would accept)."""
    return [
        m.group(0)
        for m in SENTENCE.finditer(data)
        if reduce(xor, m.group(1), 0) == int(m.group(2), 16)
    ]


def test_the_epoch_is_valid_nmea() -> None:
    assert len(good_sentences(NMEA)) == NMEA.count(b"$") >= 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(BAUDS))
def test_same_speed_reads_every_byte(data: bytes, baud: int) -> None:
    assert misread(data, baud, baud) == data


@pytest.mark.parametrize(("sent", "read"), list(itertools.permutations(BAUDS, 2)))
def test_other_speeds_read_no_sentence(sent: int, read: int) -> None:
    got = misread(NMEA * 3, sent, read)
    assert good_sentences(got) == []
    # A slower reader sees fewer frames than were sent; a faster one more (zero bits stretched
    # over several of its frames, read as NULs and framing errors).
    if read < sent:
        assert 0 < len(got) < len(NMEA * 3)
    else:
        assert len(got) > len(NMEA * 3)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[PtyDevice]:
    dev = PtyDevice(tmp_path / "gnss0", baud=9600)
    dev.plug()
    try:
        yield dev
    finally:
        dev.unplug()


def _open_at(path: Path, baud: int) -> int:
    """The reader's side, as pyserial opens a port: raw, at ``baud``."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    attrs = termios.tcgetattr(fd)
    speed = getattr(termios, f"B{baud}")
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def _read_for(fd: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            out += os.read(fd, 65536)
    return out


@pytest.mark.parametrize("baud", [4800, 9600, 115200])
def test_reader_gets_what_its_uart_would(device: PtyDevice, baud: int) -> None:
    fd = _open_at(device.link_path, baud)
    try:
        assert device.line_baud() == baud  # the slave's setting, read through the master
        device.write(NMEA)
        got = _read_for(fd, 0.3)
    finally:
        os.close(fd)
    assert got == misread(NMEA, 9600, baud)
    assert (got == NMEA) is (baud == 9600)
    assert (device.bytes_garbled > 0) is (baud != 9600)


def test_speed_set_by_a_reader_outlives_its_port(device: PtyDevice) -> None:
    os.close(_open_at(device.link_path, 19200))
    assert device.line_baud() == 19200
    device.unplug()
    assert device.line_baud() is None
    device.replug()  # a new pseudo-terminal at the kernel's default speed
    assert device.line_baud() == 38400


def test_without_a_baud_the_pty_ignores_speeds(tmp_path: Path) -> None:
    dev = PtyDevice(tmp_path / "obd0")
    dev.plug()
    try:
        fd = _open_at(dev.link_path, 4800)
        try:
            dev.write(NMEA)
            assert _read_for(fd, 0.3) == NMEA
        finally:
            os.close(fd)
    finally:
        dev.unplug()
