"""Pseudo-terminal device: a serial port the agent opens by a stable path, which can be unplugged.

A ``PtyDevice`` owns the master side of a pseudo-terminal and publishes the slave side under a
stable symlink (like udev's ``/dev/gnss0``). ``unplug()`` closes the master, so a reader of the
slave gets EIO/hangup exactly as with a USB serial adapter pulled out, and removes the symlink, so
reopening fails with ENOENT until ``replug()`` creates a new pseudo-terminal behind the same path.

A pseudo-terminal ignores the baud rate: bytes arrive intact whatever speed the reader set. A
device given its own ``baud`` behaves like a real UART instead: it reads the speed the reader
set on the slave and, when the two differ, the reader gets what its UART would make of the line
(:func:`misread`): garbled bytes, framing errors read as NULs, never a sentence.
"""

from __future__ import annotations

import errno
import os
import re
import select
import termios
import threading
import time
import tty
from pathlib import Path

# termios speed codes (B9600 ...) to bits per second; what tcgetattr reports per direction.
_SPEEDS = {getattr(termios, n): int(n[1:]) for n in dir(termios) if re.fullmatch(r"B\d+", n)}
# A UART frame as the line carries it, 8N1: start bit 0, data bits LSB first, stop bit 1.
_FRAMES = tuple("0" + format(b, "08b")[::-1] + "1" for b in range(256))


def misread(data: bytes, sent_baud: float, read_baud: float) -> bytes:
    """What a UART reading at ``read_baud`` receives from ``data`` sent at ``sent_baud`` (8N1).

    The line is played bit by bit at the sender's speed; the receiver waits for the line to go
    low (a start bit), samples the middle of each of its own bit times, and hands over the byte
    whatever the stop bit said: Linux passes a byte with a framing error on unchanged in raw
    mode (and a break, an all-zero frame, as NUL). Equal speeds give ``data`` back unchanged.
    """
    line = "".join(_FRAMES[b] for b in data)
    step = sent_baud / read_baud  # one received bit, in sent bits
    end = len(line)
    out = bytearray()
    t = 0.0
    while True:
        i = line.find("0", int(t))
        if i < 0:
            break
        start = max(float(i), t)
        value = 0
        for k in range(8):
            at = int(start + (1.5 + k) * step)
            if at < end and line[at] == "1":
                value |= 1 << k
        out.append(value)
        # Look for the next start bit from the middle of this frame's stop bit on.
        t = start + 9.5 * step
        if t >= end:
            break
    return bytes(out)


class PtyDevice:
    def __init__(self, link_path: str | Path, baud: int | None = None) -> None:
        """``baud``: the device's own UART speed; None for a plain pseudo-terminal."""
        self.link_path = Path(link_path)
        self.baud = baud
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave_name = ""
        self.bytes_dropped = 0
        self.bytes_garbled = 0

    @property
    def online(self) -> bool:
        return self._master is not None

    @property
    def slave_name(self) -> str:
        return self._slave_name

    def plug(self) -> None:
        """Create the pseudo-terminal and its symlink (idempotent)."""
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            # Raw mode on the slave: no echo, no CR/LF translation, like a real UART.
            tty.setraw(slave, termios.TCSANOW)
            self._slave_name = os.ttyname(slave)
            os.close(slave)
            os.set_blocking(master, False)
            self._master = master
            tmp = self.link_path.with_name(self.link_path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._slave_name)
            os.replace(tmp, self.link_path)

    replug = plug

    def unplug(self) -> None:
        with self._lock:
            if self._master is None:
                return
            self.link_path.unlink(missing_ok=True)
            os.close(self._master)
            self._master = None

    close = unplug

    def line_baud(self) -> int | None:
        """The speed the reader set on the slave side (None: unplugged, or not a standard rate).

        Linux answers termios requests on a pty master with the slave's settings, so the
        reader's ``tcsetattr`` (pyserial's ``baudrate = ...``) shows here without opening the
        slave ourselves; the setting survives the reader closing and reopening the port.
        """
        master = self._master
        if master is None:
            return None
        try:
            attrs = termios.tcgetattr(master)
        except termios.error:
            return None
        ispeed, ospeed = attrs[4], attrs[5]
        return _SPEEDS.get(ispeed or ospeed)  # an input speed of 0 means "same as output"

    def write(self, data: bytes) -> int:
        """Write what the kernel takes now; like a UART nobody reads, the rest is lost."""
        with self._lock:
            if self._master is None:
                self.bytes_dropped += len(data)
                return 0
            if self.baud is not None:
                reader_baud = self.line_baud()
                if reader_baud != self.baud:
                    # A rate tcgetattr cannot name (a custom divisor) is another speed too.
                    data = misread(data, self.baud, reader_baud or self.baud * 1.5)
                    self.bytes_garbled += len(data)
            try:
                n = os.write(self._master, data)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EIO):
                    self.bytes_dropped += len(data)
                    return 0
                raise
            self.bytes_dropped += len(data) - n
            return n

    def read(self, timeout_s: float) -> bytes:
        """Bytes the agent wrote to the device, or b"" after ``timeout_s`` (or while unplugged)."""
        master = self._master
        if master is None:
            return b""
        try:
            ready, _, _ = select.select([master], [], [], timeout_s)
        except (OSError, ValueError):
            return b""
        if not ready:
            return b""
        try:
            return os.read(master, 4096)
        except OSError as exc:
            # EIO: nobody has the slave open. The caller just polls again.
            if exc.errno in (errno.EAGAIN, errno.EIO, errno.EBADF):
                # select() reports a master readable forever while no slave is open; wait so
                # the caller's poll loop does not spin.
                time.sleep(min(timeout_s, 0.05))
                return b""
            raise
