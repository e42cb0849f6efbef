"""Fault harness: the agent, the simulated van and a broker as real processes, and the oracles.

Every process here is started by a test and killed by PID in that test's ``finally``. The
oracles read what a backend would read (the MQTT messages, deduplicated by ``(device_id, seq)``)
and what the agent committed (its SQLite spool file, read while the agent is dead).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.broker import Mosquitto, free_port
from tests.listener import Received

REPO = Path(__file__).resolve().parents[2]
DEVICE = "van-f1"
PREFIX = "fleet/v1"
SPOOL_TABLE = "ack_queue_default"  # persist-queue's table name for the spool's ack queue
SPOOL_ACKED = 5  # persist-queue's AckStatus.acked: rows below it are still owed to the broker


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def persistent_broker(workdir: Path, *, extra: str = "") -> Mosquitto:
    """A mosquitto that keeps sessions across ``stop()``/``start()``.

    The test listener's persistent session must survive the broker outages the tests inject;
    otherwise a message the agent publishes (and the broker PUBACKs, so the agent forgets it)
    before the listener has resubscribed would be lost to the oracle, not to the agent.
    Started as root, mosquitto switches to its own user, which cannot enter pytest's private
    temporary directories: it would then fail to save sessions (and to write its log) without
    a word on stderr. ``user root`` keeps it as it was started (ignored when not root).
    """
    port = free_port()
    store = workdir / "db"
    store.mkdir(parents=True, exist_ok=True)
    conf = (
        "persistence true\n"
        f"persistence_location {store}/\n"
        + ("user root\n" if os.geteuid() == 0 else "")
        + f"listener {port} 127.0.0.1\n"
        + (extra or "allow_anonymous true\n")
    )
    return Mosquitto(workdir, port=port, extra_conf=conf)


def agent_toml(
    state_dir: Path,
    broker: Mosquitto,
    *,
    gnss_port: str | None = None,
    obd_port: str | None = None,
    line_file: str | None = None,
    time_scale: float = 1.0,
    flush_interval_s: float = 5.0,
    extra: str = "",
    mqtt_extra: str = "",
    spool_extra: str = "",
) -> str:
    """An agent configuration for a fault test (TOML text)."""
    gnss = (
        f'[gnss]\nport = "{gnss_port}"\nsilence_timeout_s = 1.0\n'
        if gnss_port
        else "[gnss]\nenabled = false\n"
    )
    obd = f'[obd]\nport = "{obd_port}"\n' if obd_port else "[obd]\nenabled = false\n"
    ignition = (
        f'[ignition]\nbackend = "simulated"\nline_file = "{line_file}"\ndebounce_s = 0.2\n'
        if line_file
        else ""
    )
    return (
        f'[agent]\nstate_dir = "{state_dir}"\ntime_scale = {time_scale}\nlog_level = "info"\n'
        f'[device]\nid = "{DEVICE}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        "backoff_min_s = 0.1\nbackoff_max_s = 0.5\nkeepalive_s = 5\n" + mqtt_extra
        + f"[spool]\nflush_interval_s = {flush_interval_s}\n" + spool_extra
        + "[report]\nmin_interval_s = 0.0\n" + gnss + obd + ignition + extra
    )


class AgentProcess:
    """``python -m agent.cli run --config FILE``, restartable; stderr accumulates in one file."""

    def __init__(
        self,
        workdir: Path,
        config_text: str,
        *,
        wrapper: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        module_args: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "agent.toml"
        self.config.write_text(config_text)
        # What follows ``python -m``: the real command line unless a test needs a variant.
        self.module_args = module_args or ["agent.cli", "run", "--config", str(self.config)]
        self.stderr_path = workdir / "agent.stderr"
        self.wrapper = list(wrapper or [])
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
        }
        self.env.update(PYTHONUNBUFFERED="1", **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", *self.module_args],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 8.0) -> int:
        """SIGTERM and wait; the exit status (SIGKILL after ``timeout_s`` fails the caller)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            why = f"agent ignored SIGTERM for {timeout_s} s:\n{self.stderr()}"
            raise AssertionError(why) from None

    def wait_exit(self, timeout_s: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def status(self) -> dict[str, Any]:
        """The daemon's status file, or {} while it is missing or being replaced."""
        state_dir = Path(_state_dir_of(self.config.read_text()))
        try:
            doc = json.loads((state_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        if self.proc is None or doc.get("pid") != self.proc.pid:
            return {}  # a previous incarnation's file
        return dict(doc)

    def close(self) -> None:
        self.sigkill()


def _state_dir_of(config_text: str) -> str:
    for line in config_text.splitlines():
        if line.startswith("state_dir"):
            return line.split("=", 1)[1].strip().strip('"')
    raise ValueError("no state_dir in the configuration")


class SimulatedVan:
    """``telematics-sim run --hold``: GNSS and ELM327 on pseudo-terminals, the ignition line."""

    def __init__(
        self, run_dir: Path, scenario: str, *, time_scale: float, gnss_hz: float = 1.0
    ) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator.cli", "run", "--scenario", scenario,
             "--time-scale", str(time_scale), "--gnss-hz", str(gnss_hz),
             "--dir", str(run_dir), "--hold"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the simulator prints its paths first
        if not line:
            self.close()
            raise RuntimeError("telematics-sim exited before printing its device paths")
        self.paths: dict[str, Any] = json.loads(line)

    @property
    def gnss(self) -> str:
        return str(self.paths["gnss"])

    @property
    def obd(self) -> str:
        return str(self.paths["obd"])

    @property
    def ignition(self) -> str:
        return str(self.paths["ignition"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- oracles ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpoolSnapshot:
    """What a dead agent's spool file holds: its integrity verdict and the records owed."""

    integrity: str
    seqs: frozenset[int]
    rows: int


def record_seqs(payload: Mapping[str, Any]) -> list[int]:
    """The durable record numbers a payload carries (each position in a batch has its own)."""
    from agent.encoder import batch_records

    if str(payload.get("schema", "")).startswith("pos/"):
        return [int(r["seq"]) for r in batch_records(payload)]
    seq = payload.get("seq")
    return [int(seq)] if isinstance(seq, int) else []


def read_spool(db: Path) -> SpoolSnapshot:
    """Open the spool file as SQLite itself would after a crash; never while the agent runs."""
    if not db.exists():
        return SpoolSnapshot("ok", frozenset(), 0)  # killed before the spool was created
    with contextlib.closing(sqlite3.connect(str(db), timeout=5.0)) as conn:
        verdict = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        seqs: set[int] = set()
        rows = 0
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if SPOOL_TABLE in tables:  # else killed between creating the file and the table
            for (data,) in conn.execute(
                f"SELECT data FROM {SPOOL_TABLE} WHERE status < {SPOOL_ACKED}"
            ):
                row = json.loads(data)
                seqs.update(record_seqs(row["payload"]))
                rows += 1
    return SpoolSnapshot(verdict, frozenset(seqs), rows)


def durable(messages: Iterable[Received], device_id: str = DEVICE) -> list[dict[str, Any]]:
    """Payloads of the spooled kinds (not ``live``, ``state`` or incoming commands)."""
    out = []
    base = f"{PREFIX}/{device_id}/"
    for m in messages:
        if not m.topic.startswith(base) or not m.payload:
            continue
        kind = m.topic[len(base):]
        if kind in ("live", "state") or (kind.startswith("cmd/") and not kind.endswith("result")):
            continue
        out.append(m.json())
    return out


def received_seqs(messages: Iterable[Received], device_id: str = DEVICE) -> dict[int, int]:
    """seq -> how many times it arrived (a backend deduplicates on it)."""
    counts: dict[int, int] = {}
    for payload in durable(messages, device_id):
        for seq in record_seqs(payload):
            counts[seq] = counts.get(seq, 0) + 1
    return counts


def missing_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs ``(first, length)`` of numbers absent between 1 and the largest present."""
    present = sorted(set(seqs))
    runs: list[tuple[int, int]] = []
    expected = 1
    for s in present:
        if s > expected:
            runs.append((expected, s - expected))
        expected = s + 1
    return runs


def topic(suffix: str, device_id: str = DEVICE) -> str:
    return f"{PREFIX}/{device_id}/{suffix}"


def payloads(messages: Iterable[Received], suffix: str) -> list[dict[str, Any]]:
    t = topic(suffix)
    return [m.json() for m in messages if m.topic == t and m.payload]


def tracebacks(text: str) -> list[str]:
    """Every traceback in a log, so a failing assertion shows them."""
    return [chunk[:2000] for chunk in text.split("Traceback (most recent call last)")[1:]]


class FaultyReceiver:
    """A GNSS receiver on a pseudo-terminal that a test unplugs, floods and time-shifts at will.

    Unlike the simulator's talker (which follows the scenario's own fault plan), this one takes
    orders from the test thread: ``unplug()``/``replug()`` the device, ``flood_bytes`` of
    random bytes before every epoch, and ``utc_offset_s`` added to the time it reports.
    """

    def __init__(
        self, link_path: Path, scenario: str, *, time_scale: float, seed: int = 7
    ) -> None:
        from simulator.model import LiveVehicle, VehicleModel
        from simulator.nmea import Talker
        from simulator.pty import PtyDevice
        from simulator.scenario import load_scenario
        from simulator.talker import Receiver

        loaded = load_scenario(scenario)
        self.model = VehicleModel(loaded)
        self.live = LiveVehicle(self.model, time_scale)
        self.device = PtyDevice(link_path)
        self.receiver = Receiver(loaded.gnss, Talker.GP, 1.0, seed)
        self.flood_bytes = 0
        self.utc_offset_s = 0.0
        self.epochs = 0
        self.flooded = 0
        self._rng = random.Random(seed)
        self._plugged = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-receiver", daemon=True)

    def start(self) -> None:
        self.device.plug()
        self._thread.start()

    def unplug(self) -> None:
        self._plugged = False
        self.device.unplug()

    def replug(self) -> None:
        self._plugged = True
        self.device.replug()

    def _run(self) -> None:
        t_s = 0
        while not self._stop.is_set():
            now_s = self.live.now_s()
            if now_s < t_s:
                self._stop.wait((t_s - now_s) / self.live.time_scale)
                continue
            t_s = max(t_s, int(now_s))  # after a stall, skip stale epochs rather than burst
            if self._plugged:
                self._emit(t_s)
            t_s += 1

    def _emit(self, t_s: int) -> None:
        state = self.model.state_at(float(t_s))
        shifted = state.utc + dt.timedelta(seconds=self.utc_offset_s)
        data = self.receiver.epoch_bytes(dataclasses.replace(state, utc=shifted))
        if self.flood_bytes:
            # Counted as the kernel takes them: a full pseudo-terminal drops the rest.
            self.flooded += self.device.write(self._rng.randbytes(self.flood_bytes))
        self.device.write(data)
        self.epochs += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.device.unplug()


def elm327_server(link_path: Path, receiver: FaultyReceiver) -> Any:
    """The simulator's ELM327 fed by ``receiver``'s vehicle (``.babbling = True``: junk replies)."""
    from simulator.elm327 import ELM327Server

    return ELM327Server(receiver.live, link_path, "v1.5", 0.005)
