"""drivers.serialio.read_available on a real pseudo-terminal and on pyserial's loop:// port."""

from __future__ import annotations

import os
import pty
import time

import pytest
import serial

from drivers.serialio import read_available


def test_pty_reads_what_was_sent_waits_when_idle_and_reports_a_closed_peer() -> None:
    master, slave = pty.openpty()
    port = serial.serial_for_url(os.ttyname(slave), timeout=0.05)
    os.close(slave)
    try:
        os.write(master, b"$GPRMC,1*00\r\n$GPGGA,2*00\r\n")
        time.sleep(0.05)
        assert read_available(port, 1.0) == b"$GPRMC,1*00\r\n$GPGGA,2*00\r\n"
        started = time.monotonic()
        assert read_available(port, 0.1) == b""
        assert time.monotonic() - started >= 0.09, "waits for the first byte"
        os.close(master)
        master = -1
        with pytest.raises(OSError):  # EIO or pyserial's "no data" message: device gone
            read_available(port, 1.0)
    finally:
        port.close()
        if master >= 0:
            os.close(master)


def test_ports_without_a_descriptor_go_through_pyserial() -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    try:
        port.write(b"41 0D 32\r\r>")
        assert read_available(port, 1.0) == b"41 0D 32\r\r>"
        assert read_available(port, 1.0) == b""
    finally:
        port.close()
