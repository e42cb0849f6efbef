"""Pseudo-terminal device: a serial port the agent opens by a stable path, which can be unplugged.

A ``PtyDevice`` owns the master side of a pseudo-terminal and publishes the slave side under a
stable symlink (like udev's ``/dev/gnss0``). ``unplug()`` closes the master, so a reader of the
slave gets EIO/hangup exactly as with a USB serial adapter pulled out, and removes the symlink, so
reopening fails with ENOENT until ``replug()`` creates a new pseudo-terminal behind the same path.
"""

from __future__ import annotations

import errno
import os
import select
import termios
import threading
import time
import tty
from pathlib import Path


class PtyDevice:
    def __init__(self, link_path: str | Path) -> None:
        self.link_path = Path(link_path)
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave_name = ""
        self.bytes_dropped = 0

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

    def write(self, data: bytes) -> int:
        """Write what the kernel takes now; like a UART nobody reads, the rest is lost."""
        with self._lock:
            if self._master is None:
                self.bytes_dropped += len(data)
                return 0
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
