"""Notifier: the sd_notify channel to systemd (READY, STATUS, WATCHDOG, STOPPING, RELOADING)."""

from __future__ import annotations

import importlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

Sender = Callable[[str], bool]


def _library_sender() -> Sender | None:
    try:
        daemon: Any = importlib.import_module("systemd.daemon")
    except ImportError:
        return None

    def send(state: str) -> bool:
        # systemd-python reads $NOTIFY_SOCKET itself; unset_environment=False keeps it for the
        # later STATUS/WATCHDOG messages.
        return bool(daemon.notify(state, unset_environment=False))

    return send


def send_datagram(socket_path: str, state: str) -> bool:
    """Send one notification datagram without systemd-python (the protocol is one datagram)."""
    if not socket_path:
        return False
    # '@' names a Linux abstract socket: its first byte is NUL in the address.
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        logger.debug("sd_notify to %s failed: %s", socket_path, exc)
        return False
    return True


class Notifier:
    """Tells systemd how the daemon is doing; a silent no-op when not started by systemd.

    ``WATCHDOG_USEC`` (set by systemd when the unit has ``WatchdogSec=``) gives the watchdog
    timeout; we ping at half of it, as sd_watchdog_enabled(3) recommends. ``WATCHDOG_PID``, when
    present, must name this process, or the watchdog is meant for someone else.
    """

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, use_library: bool = True
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET", "")
        self._send: Sender | None = None
        if self.socket_path:
            lib = _library_sender() if use_library and environ is None else None
            path = self.socket_path
            self._send = lib or (lambda state: send_datagram(path, state))
        self.watchdog_timeout_s = _watchdog_timeout_s(env)
        self.sent = 0
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self._send is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout, or None when there is no watchdog."""
        if self.watchdog_timeout_s is None:
            return None
        return self.watchdog_timeout_s / 2.0

    def notify(self, state: str) -> bool:
        if self._send is None:
            return False
        ok = self._send(state)
        if ok:
            self.sent += 1
        return ok

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        """Send a STATUS= line when it changed (systemctl status shows the last one)."""
        line = " ".join(text.split())  # one line: a newline would start a new assignment
        if line == self._last_status:
            return False
        self._last_status = line
        return self.notify(f"STATUS={line}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")


def _watchdog_timeout_s(env: Mapping[str, str]) -> float | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw[:32])
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000
