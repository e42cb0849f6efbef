"""Reading a serial port with as few wake-ups and system calls as possible.

pyserial's POSIX ``read`` costs two selects and two ioctls per call (``in_waiting``, then a
select loop inside ``read``). At 10 Hz GNSS and several OBD replies a second that is most of a
driver thread's CPU on a Pi, so a port with a file descriptor is read directly: one select, one
read. Other pyserial URL handlers (``socket://``, ``loop://``) go through pyserial.
"""

from __future__ import annotations

import os
import select
from typing import Any

import serial

READ_CHUNK = 4096  # bytes per read: ten 10 Hz epochs of a chatty receiver


def read_available(port: Any, wait_s: float) -> bytes:
    """What the device has sent, waiting up to ``wait_s`` for the first byte (b"" if nothing).

    Raises ``serial.SerialException`` (an ``OSError``) when the device is gone: a pty whose
    other end closed, a USB adapter pulled out. Ports without a file descriptor wait for their
    own ``timeout`` instead of ``wait_s``.
    """
    fd = getattr(port, "fd", None)
    if not isinstance(fd, int):
        waiting = port.in_waiting
        data = bytes(port.read(waiting if waiting > 0 else 1))
        if waiting == 0 and data:
            data += bytes(port.read(port.in_waiting))
        return data
    ready, _, _ = select.select([fd], [], [], wait_s)
    if not ready:
        return b""
    data = os.read(fd, READ_CHUNK)
    if not data:
        # What pyserial says in the same case.
        raise serial.SerialException(
            "device reports readiness to read but returned no data"
            " (device disconnected or multiple access on port?)"
        )
    return data
