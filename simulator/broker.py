"""Broker: a throwaway local mosquitto on a free loopback port, for the demo and the tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """One mosquitto process with a temporary configuration (no persistence unless asked).

    ``stop()`` and ``start()`` keep the same port, so a client sees an outage and a recovery.
    Extra configuration lines (TLS listeners, ACLs) can be passed as ``extra_conf``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_conf: str = "",
        persistent: bool = False,
    ) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise RuntimeError("mosquitto is not installed: run `make test`, which installs it")
        self.exe = exe
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        body = extra_conf or f"listener {self.port} {self.host}\nallow_anonymous true\n"
        # Persistence keeps subscribers' sessions (and what is queued for them) across a
        # restart, as a production broker does; tests of outages need it on the subscriber side.
        persistence = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistent
            else "persistence false\n"
        )
        # Started as root, mosquitto drops to the `mosquitto` user, which cannot write our
        # temporary directory (log, persistence file): stay who we are instead.
        # (Callers' extra lines may say so themselves: mosquitto refuses a second `user`.)
        says_user = any(line.split()[:1] == ["user"] for line in body.splitlines())
        user = "user root\n" if os.geteuid() == 0 and not says_user else ""
        self.conf.write_text(
            persistence
            + user
            + f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "max_inflight_messages 0\nmax_queued_messages 0\n"
            + body
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"mosquitto exited at start: {err} {self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
