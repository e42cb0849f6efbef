"""The daemon as systemd runs it: a real NOTIFY_SOCKET, signals, mosquitto, the ignition line."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from simulator.broker import Mosquitto
from simulator.ignition import IgnitionLine
from tests.listener import Listener, Received

REPO = Path(__file__).resolve().parents[2]
DEVICE = "van-d1"


class NotifySocket:
    """A datagram socket bound like systemd's, collecting every notification with its time."""

    def __init__(self) -> None:
        self.name = f"@telematics-test-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name[1:])
        self._sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.received.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[tuple[float, str]]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def times(self, state: str, after: float = 0.0, before: float = float("inf")) -> list[float]:
        with self._cond:
            return [t for t, m in self.received if state in m.split("\n") and after <= t < before]

    def lines(self, prefix: str) -> list[str]:
        with self._cond:
            return [
                line for _, m in self.received for line in m.split("\n") if line.startswith(prefix)
            ]

    def close(self) -> None:
        self._closed = True
        self._thread.join(2.0)
        self._sock.close()


class AgentProcess:
    """``python -m agent.cli run --config F`` as a child process, as systemd would start it."""

    def __init__(
        self,
        tmp_path: Path,
        broker: Mosquitto,
        *,
        extra_toml: str = "",
        env: dict[str, str] | None = None,
        watchdog_usec: int | None = None,
        line_file: Path | None = None,
        debounce_s: float = 0.2,
        time_scale: float = 1.0,
        gnss_port: str | None = None,
        obd_port: str | None = None,
        mqtt_toml: str = "",
        obd_toml: str = "",
    ) -> None:
        self.state_dir = tmp_path / "state"
        self.config = tmp_path / "agent.toml"
        self.stderr_path = tmp_path / "agent.stderr"
        ignition = (
            f'[ignition]\nbackend = "simulated"\nline_file = "{line_file}"\n'
            f"debounce_s = {debounce_s}\n"
            if line_file is not None
            else ""
        )
        gnss = f'[gnss]\nport = "{gnss_port}"\n' if gnss_port else "[gnss]\nenabled = false\n"
        obd = (
            f'[obd]\nport = "{obd_port}"\ndtc_interval_s = 5.0\n{obd_toml}'
            if obd_port
            else "[obd]\nenabled = false\n"
        )
        self.config.write_text(
            f'[agent]\nstate_dir = "{self.state_dir}"\ntime_scale = {time_scale}\n'
            f'[device]\nid = "{DEVICE}"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            "backoff_min_s = 0.1\nbackoff_max_s = 0.5\n"
            + mqtt_toml
            + gnss
            + obd
            + ignition
            + extra_toml
        )
        self.notify = NotifySocket()
        full_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")
        }
        full_env.update(NOTIFY_SOCKET=self.notify.name, PYTHONUNBUFFERED="1", **(env or {}))
        if watchdog_usec is not None:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config)],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.notify.wait_for(lambda r: any("READY=1" in m for _, m in r), 0.2):
            rc = self.proc.poll()
            assert rc is None, f"agent exited with {rc} before READY=1; stderr:\n{self.stderr()}"
            assert time.monotonic() < deadline, (
                f"no READY=1 within {timeout_s} s; stderr:\n{self.stderr()}"
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def terminate(self, timeout_s: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds taken)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            why = f"no exit within {timeout_s} s; stderr:\n{self.stderr()}"
            raise AssertionError(why) from None
        return rc, time.monotonic() - started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.notify.close()
        self._stderr.close()

    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "status.json").read_text()))


SCHEMAS = REPO / "agent" / "schemas"


def _check_contract(messages: list[Received]) -> None:
    """Every message of a kind with a shipped schema must match it."""
    checked = 0
    for m in messages:
        rest = m.topic.removeprefix(f"fleet/v1/{DEVICE}/")
        kind = rest.split("/")[0]
        if kind == "cmd":
            kind = "cmd_result" if rest.endswith("/result") else ""
        path = SCHEMAS / f"{kind}.json"
        if kind and path.exists():
            jsonschema.validate(m.json(), json.loads(path.read_text()))
            checked += 1
    assert checked, "no message to check"


def _topic(suffix: str) -> str:
    return f"fleet/v1/{DEVICE}/{suffix}"


def _payloads(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic == _topic(suffix)]


@pytest.fixture
def agent_factory(
    tmp_path: Path, mosquitto: Mosquitto
) -> Any:
    started: list[AgentProcess] = []

    def make(**kw: Any) -> AgentProcess:
        a = AgentProcess(tmp_path, mosquitto, **kw)
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()


def test_ready_status_watchdog_then_clean_stop(
    agent_factory: Any, listener: Listener, mosquitto: Mosquitto
) -> None:
    agent = agent_factory(watchdog_usec=2_000_000)  # ping every 1 s
    agent.wait_ready()
    assert agent.notify.wait_for(lambda r: len(agent.notify.times("WATCHDOG=1")) >= 3, 10.0)
    pings = agent.notify.times("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.5 < g < 1.8 for g in gaps), gaps
    assert listener.wait_for(
        lambda ms: any(p.get("online") for p in _payloads(ms, "state")), 10.0
    ), "birth published"
    assert agent.notify.wait_for(lambda r: bool(agent.notify.lines("STATUS=")), 5.0)
    status_line = agent.notify.lines("STATUS=")[-1]
    assert "spool" in status_line and "broker" in status_line and "fix" in status_line

    rc, took = agent.terminate()
    assert rc == 0
    assert took < 5.0, took
    assert agent.notify.times("STOPPING=1"), "STOPPING=1 before exit"
    assert listener.wait_for(
        lambda ms: any(p.get("online") is False for p in _payloads(ms, "state")), 5.0
    ), "offline state published"
    _assert_retained_offline(mosquitto)
    assert agent.status()["state"] == "stopped"


def _assert_retained_offline(mosquitto: Mosquitto) -> None:
    """A subscriber arriving later gets the retained state: offline."""
    late = Listener(mosquitto.host, mosquitto.port, _topic("state"))
    try:
        assert late.wait_for(lambda ms: bool(ms), 5.0)
        assert late.messages[-1].retain and late.messages[-1].json()["online"] is False
    finally:
        late.close()


def test_kill_9_leaves_the_last_will_retained_offline(
    agent_factory: Any, listener: Listener, mosquitto: Mosquitto
) -> None:
    keepalive_s = 5  # the smallest the configuration allows
    agent = agent_factory(mqtt_toml=f"keepalive_s = {keepalive_s}\n")
    agent.wait_ready()
    assert listener.wait_for(
        lambda ms: any(p.get("online") is True for p in _payloads(ms, "state")), 10.0
    ), "birth published"
    birth = _payloads(listener.messages, "state")[-1]
    agent.proc.kill()  # SIGKILL: no STOPPING, no goodbye, the kernel closes the socket
    assert agent.proc.wait(5) == -signal.SIGKILL
    # The broker publishes the will when it sees the link die: at once when the socket closes,
    # at the latest 1.5 keepalives after the last packet.
    assert listener.wait_for(
        lambda ms: _payloads(ms, "state")[-1].get("online") is False, keepalive_s * 1.5 + 2.0
    ), "the last will said offline"
    will = _payloads(listener.messages, "state")[-1]
    jsonschema.validate(will, json.loads((SCHEMAS / "state.json").read_text()))
    assert (will["device_id"], will["boot_id"]) == (birth["device_id"], birth["boot_id"])
    assert will["config_hash"] == birth["config_hash"]
    assert not agent.notify.times("STOPPING=1"), "killed, not stopped: the broker spoke for it"
    _assert_retained_offline(mosquitto)


@pytest.mark.parametrize("stage", ["pipeline", "publisher"])
def test_watchdog_pings_stop_when_a_stage_stalls(
    agent_factory: Any, listener: Listener, stage: str
) -> None:
    # WATCHDOG_USEC 3 s: pings every 1.5 s; a stage without progress for 1.5 s is stalled.
    agent = agent_factory(watchdog_usec=3_000_000, env={"TELEMATICS_TEST_HOOKS": "1"})
    agent.wait_ready()
    assert agent.notify.wait_for(lambda r: len(agent.notify.times("WATCHDOG=1")) >= 2, 10.0)
    assert listener.wait_for(lambda ms: any(m.topic == _topic("state") for m in ms), 10.0)
    stalled_at = time.monotonic()
    if stage == "pipeline":
        agent.signal(signal.SIGUSR2)
    else:
        # The publisher thread stalls inside the next command callback it runs.
        agent.signal(signal.SIGUSR1)
        time.sleep(0.3)
        listener.client.publish(_topic("cmd/ping"), b'{"id": "stall"}', qos=1)
    # Allow the stall to be noticed (1.5 s) plus a loop turn, then watch a window of 3.5 s:
    # healthy, that window would hold two pings.
    time.sleep(2.5)
    window_start = time.monotonic()
    time.sleep(3.5)
    assert agent.notify.times("WATCHDOG=1", after=window_start) == []
    assert agent.notify.times("WATCHDOG=1", after=stalled_at - 10.0), "pinged before the stall"
    assert f"stalled: ['{stage}']; withholding the watchdog" in agent.stderr()
    status = agent.status()
    assert status["stages"][stage]["ok"] is False
    other = "publisher" if stage == "pipeline" else "pipeline"
    assert status["stages"][other]["ok"] is True
    rc, took = agent.terminate()
    assert rc == 0 and took < 5.0, "a stalled agent still stops in time"


def test_stall_hook_is_off_without_the_environment_variable(agent_factory: Any) -> None:
    agent = agent_factory()
    agent.wait_ready()
    agent.signal(signal.SIGUSR2)  # default action: the process dies (no hook installed)
    assert agent.proc.wait(5) == -signal.SIGUSR2


def test_ignition_cycles_drive_events_and_the_parked_state(
    agent_factory: Any, listener: Listener, tmp_path: Path
) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    line.set(True)
    agent = agent_factory(line_file=line.path)
    agent.wait_ready()

    def events(kind: str) -> Callable[[list[Received]], int]:
        return lambda ms: len(_payloads(ms, f"event/{kind}"))

    def events_reach(kind: str, n: int) -> Callable[[list[Received]], bool]:
        return lambda ms: events(kind)(ms) == n

    assert listener.wait_for(lambda ms: events("ignition_on")(ms) == 1, 10.0)
    assert listener.wait_for(
        lambda ms: any(p.get("parked") is False for p in _payloads(ms, "state")), 5.0
    )
    for cycle in range(2):
        line.set(False)
        assert listener.wait_for(events_reach("ignition_off", cycle + 1), 10.0)
        assert listener.wait_for(
            lambda ms: _payloads(ms, "state")[-1].get("parked") is True, 5.0
        ), "parked state published"
        assert listener.wait_for(
            lambda ms: any(p.get("parked") is True for p in _payloads(ms, "health")), 10.0
        ), "parked in health (on change, at most every 5 s)"
        assert _wait(lambda: _safe_status(agent).get("parked") is True, 5.0), "status file"
        line.set(True)
        assert listener.wait_for(events_reach("ignition_on", cycle + 2), 10.0)
        assert listener.wait_for(
            lambda ms: _payloads(ms, "state")[-1].get("parked") is False, 5.0
        )
    off = _payloads(listener.messages, "event/ignition_off")[0]
    assert off["data"]["source"] == "gpio"
    _check_contract(listener.messages)
    seqs = [p["seq"] for p in _payloads(listener.messages, "event/ignition_on")]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_power_hold_is_released_after_ignition_off_and_flush(
    agent_factory: Any, tmp_path: Path
) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    line.set(True)
    hold = tmp_path / "gpio5.out"
    agent = agent_factory(
        line_file=line.path,
        extra_toml="power_hold_pin = 5\npower_hold_release_s = 0.5\n",
    )
    agent.wait_ready()

    def wait_level(level: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if hold.exists() and hold.read_text() == level:
                return True
            time.sleep(0.05)
        return False

    assert wait_level("1\n", 10.0), "held while the ignition is on"
    line.set(False)
    assert wait_level("0\n", 10.0), "released once flushed and the delay passed"
    line.set(True)
    assert wait_level("1\n", 10.0), "held again at the next ignition on"


def test_health_records_carry_the_documented_fields(
    agent_factory: Any, listener: Listener
) -> None:
    agent = agent_factory(extra_toml="[health]\ninterval_s = 5.0\n")
    agent.wait_ready()
    # One record at once when the broker link comes up (a change), then every interval_s.
    assert listener.wait_for(lambda ms: len(_payloads(ms, "health")) >= 1, 15.0)
    h = _payloads(listener.messages, "health")[-1]
    assert h["schema"] == "health/1" and h["device_id"] == DEVICE
    for key in ("seq", "ts", "time_source", "boot_id", "uptime_s", "config_hash", "versions"):
        assert key in h, key
    assert {"depth"} <= set(h["spool"])
    assert {"connected", "reconnects", "bytes_sent"} <= set(h["mqtt"])
    assert {"disk_free_bytes", "rss_bytes"} <= set(h["host"])
    assert h["host"]["rss_bytes"] > 1_000_000
    _check_contract(listener.messages)
    assert set(h["stages"]) == {"pipeline", "publisher"}


def test_sighup_reloads_good_config_and_keeps_the_old_on_error(
    agent_factory: Any, listener: Listener
) -> None:
    agent = agent_factory()
    agent.wait_ready()
    original = agent.config.read_text()
    deadline = time.monotonic() + 10
    while "config_hash" not in _safe_status(agent) and time.monotonic() < deadline:
        time.sleep(0.1)
    hash0 = agent.status()["config_hash"]

    agent.config.write_text(original + "[report]\nmoving_interval_sec = 5.0\n")
    agent.signal(signal.SIGHUP)
    assert _wait(lambda: "reload refused" in agent.stderr(), 10.0)
    assert "'report.moving_interval_sec': unknown key" in agent.stderr()
    assert str(agent.config) in agent.stderr()

    agent.config.write_text(original + "[report]\nmoving_interval_s = 5.0\n")
    agent.signal(signal.SIGHUP)
    assert _wait(lambda: _safe_status(agent).get("config_hash") not in (None, hash0), 10.0)
    assert agent.proc.poll() is None

    agent.config.write_text(original.replace("backoff_max_s = 0.5", "backoff_max_s = 0.7"))
    agent.signal(signal.SIGHUP)
    assert _wait(lambda: "take effect only after a restart" in agent.stderr(), 10.0)
    assert "mqtt" in agent.stderr().split("take effect only after a restart")[0].splitlines()[-1]
    rc, _ = agent.terminate()
    assert rc == 0


def _safe_status(agent: AgentProcess) -> dict[str, Any]:
    try:
        return agent.status()
    except (OSError, ValueError):
        return {}


def _status_written_after(agent: AgentProcess, unix_s: float) -> dict[str, Any]:
    """The first status file the daemon writes at or after ``unix_s`` (wall clock)."""
    deadline = time.monotonic() + max(0.0, unix_s - time.time()) + 10.0
    while time.monotonic() < deadline:
        status = _safe_status(agent)
        if status.get("written_unix", 0.0) >= unix_s:
            return status
        time.sleep(0.1)
    raise AssertionError(f"no status file written after {unix_s}: {_safe_status(agent)}")


def _wait(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@contextlib.contextmanager
def simulated_van(
    tmp_path: Path, scenario_text: str, scale: float, *, elm_latency_ms: int
) -> Iterator[dict[str, str]]:
    """``telematics-sim run --hold`` on a scenario: its device paths, stopped afterwards."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(scenario_text)
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "simulator.cli", "run", "--scenario", str(scenario)),
            *("--time-scale", str(scale), "--dir", str(tmp_path / "sim"), "--hold"),
            *("--elm-latency-ms", str(elm_latency_ms)),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        yield dict(json.loads(sim.stdout.readline()))
    finally:
        sim.terminate()
        sim.wait(10)


SHORT_DRIVE = """\
name = "short_cycles"
description = "two short trips separated by parked periods"
start_utc = "2026-03-02T13:00:00Z"
seed = 7

[route]
corner_radius_m = 25
waypoints = [[51.340000, 12.370000], [51.340000, 12.382956], [51.345396, 12.382956]]

[[plan]]
do = "park"
duration_s = 10

[[plan]]
do = "drive"
distance_m = 800
speed_kmh = 40

[[plan]]
do = "park"
duration_s = 90

[[plan]]
do = "drive"
distance_m = 600
speed_kmh = 40

[[plan]]
do = "park"
duration_s = 90
"""


def test_simulated_van_ignition_cycles_drive_trips(
    agent_factory: Any, listener: Listener, tmp_path: Path
) -> None:
    """``telematics-sim run`` drives GNSS, the ELM327 and the ignition line, at x40 time."""
    scale = 40.0
    # A real adapter's 30 ms per request cannot keep up with 2 Hz polling at x40.
    with simulated_van(tmp_path, SHORT_DRIVE, scale, elm_latency_ms=2) as devices:
        agent = agent_factory(
            line_file=Path(devices["ignition"]),
            debounce_s=2.0,
            time_scale=scale,
            gnss_port=devices["gnss"],
            obd_port=devices["obd"],
            extra_toml="[detect.trip]\nmin_stop_s = 60.0\n",
        )
        agent.wait_ready()

        def count(kind: str) -> Callable[[list[Received]], int]:
            return lambda ms: len(_payloads(ms, f"event/{kind}"))

        # Park 10 s, drive, park 90 s, drive, park 90 s: about 8 s of real time at x40.
        assert listener.wait_for(lambda ms: count("trip_start")(ms) >= 1, 20.0), agent.stderr()
        # With a live fix and an adapter, locate and read_dtc have real answers.
        for name in ("locate", "read_dtc"):
            listener.client.publish(_topic(f"cmd/{name}"), json.dumps({"id": name}), qos=1)
        assert listener.wait_for(
            lambda ms: all(_payloads(ms, f"cmd/{n}/result") for n in ("locate", "read_dtc")),
            10.0,
        )
        located = _payloads(listener.messages, "cmd/locate/result")[0]
        assert located["ok"], located
        assert abs(located["result"]["lat"] - 51.34) < 0.02
        assert abs(located["result"]["lon"] - 12.38) < 0.02
        assert located["result"]["fix_age_s"] < 5
        # The live lane keeps only the newest position: a moving van may replace the located
        # one with a newer one before it goes out. Either proves live is current now.
        located_ts = located["result"]["ts"]
        assert listener.wait_for(
            lambda ms: any(p["ts"] >= located_ts for p in _payloads(ms, "live")), 5.0
        ), "locate published the live position"
        def dtc_results_over(n: int) -> Callable[[list[Received]], bool]:
            return lambda ms: len(_payloads(ms, "cmd/read_dtc/result")) > n

        # The ECU answers only once the engine runs; the adapter reads codes when it connects.
        deadline = time.monotonic() + 10.0
        while not _payloads(listener.messages, "cmd/read_dtc/result")[-1]["ok"]:
            assert time.monotonic() < deadline, _payloads(listener.messages, "cmd/read_dtc/result")
            n = len(_payloads(listener.messages, "cmd/read_dtc/result"))
            listener.client.publish(_topic("cmd/read_dtc"), json.dumps({"id": "again"}), qos=1)
            listener.wait_for(dtc_results_over(n), 5.0)
            time.sleep(0.5)
        dtc = _payloads(listener.messages, "cmd/read_dtc/result")[-1]
        assert isinstance(dtc["result"]["stored"], list)
        assert listener.wait_for(lambda ms: count("ignition_off")(ms) >= 1, 20.0)
        assert listener.wait_for(
            lambda ms: any(p.get("parked") is True for p in _payloads(ms, "state")), 5.0
        )
        assert listener.wait_for(lambda ms: count("trip_end")(ms) >= 1, 20.0), agent.stderr()
        assert listener.wait_for(lambda ms: count("trip_start")(ms) >= 2, 20.0)
        assert listener.wait_for(lambda ms: count("trip_end")(ms) >= 2, 30.0)
        assert listener.wait_for(
            lambda ms: _payloads(ms, "state")[-1].get("parked") is True, 5.0
        )
        ons = _payloads(listener.messages, "event/ignition_on")
        assert ons and all(p["data"]["source"] == "gpio" for p in ons)
        trip = _payloads(listener.messages, "event/trip_end")[0]
        assert trip["data"]["distance_km"] > 0.5, trip
        _check_contract(listener.messages)
        health = _payloads(listener.messages, "health")[-1]
        assert health["gnss"]["sats"] > 0 and "obd" in health
        # Every driver thread kept making progress through the parked periods.
        stages = agent.status()["stages"]
        assert {"IgnitionReader", "OBDReader", "GNSSReceiver"} <= set(stages)
        assert all(st["ok"] for st in stages.values()), stages


COLD_START_THEN_PARK = """\
name = "cold_start_then_park"
description = "no fix for 150 s while the engine idles, then parked"
start_utc = "2026-03-02T13:00:00Z"
seed = 5

[route]
waypoints = [[51.340000, 12.370000], [51.340000, 12.382956]]

[gnss]
cold_start_s = 150

[[plan]]
do = "idle"
duration_s = 210

[[plan]]
do = "park"
duration_s = 3000
"""


class LEDProbe:
    """Watches a simulated GPIO output file and tells which documented pattern it shows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def level(self) -> int:
        try:
            return 1 if self.path.read_text() == "1\n" else 0
        except FileNotFoundError:
            return 0

    def runs(self, window_s: float = 3.8) -> list[tuple[int, float, bool]]:
        """(level, seconds, complete) for each run of one level seen within the window.

        The default window holds a whole 2 s cycle plus its longest run, so every pattern
        shows at least one complete run of each level it has.
        """
        samples: list[tuple[float, int]] = []
        end = time.monotonic() + window_s
        while (now := time.monotonic()) < end:
            samples.append((now, self.level()))
            time.sleep(0.01)
        runs: list[tuple[int, float, bool]] = []
        start = samples[0]
        for prev, cur in itertools.pairwise(samples):
            if cur[1] != prev[1]:
                runs.append((prev[1], cur[0] - start[0], bool(runs)))
                start = cur
        runs.append((start[1], samples[-1][0] - start[0], False))
        return runs

    def pattern(self) -> str:
        """'all_good', 'no_fix', 'no_broker', 'off', or 'unclear' (docs/daemon.md)."""
        runs = self.runs()
        levels = {level for level, _, _ in runs}
        if levels == {1}:
            return "all_good"
        if levels == {0}:
            return "off"
        on = [s for level, s, whole in runs if level == 1 and whole]
        off = [s for level, s, whole in runs if level == 0 and whole]
        if on and off and min(on) > 0.6 and max(off) > 0.6:
            return "no_fix"  # slow blink: 1 s on, 1 s off
        flashes = [s for level, s, _ in runs if level == 1]
        if len(flashes) >= 2 and max(flashes) < 0.45 and off and max(off) > 1.0:
            return "no_broker"  # double flash: 0.15 s on, 0.15 s off, 0.15 s on, a pause
        return "unclear"

    def wait_for(self, pattern: str, timeout_s: float) -> list[str]:
        """Watch until a window shows ``pattern``; returns every verdict seen."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen.append(self.pattern())
            if seen[-1] == pattern:
                break
        return seen


def test_simulated_van_led_patterns_and_no_ecu_queries_while_parked(
    agent_factory: Any, listener: Listener, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The status LED through a cold start, a fix and a broker outage; OBD quiet when parked."""
    scale = 10.0  # the cold start lasts 15 s, parking starts after 21 s
    with simulated_van(tmp_path, COLD_START_THEN_PARK, scale, elm_latency_ms=5) as devices:
        line_file = Path(devices["ignition"])
        agent = agent_factory(
            line_file=line_file,
            debounce_s=2.0,
            time_scale=scale,
            gnss_port=devices["gnss"],
            obd_port=devices["obd"],
            # ATRV every 5 simulated seconds: twice a real second at x10.
            obd_toml="voltage_interval_s = 5.0\n",
            extra_toml="led_pin = 6\n",
        )
        led = LEDProbe(line_file.with_name("gpio6.out"))
        agent.wait_ready()
        assert listener.wait_for(lambda ms: bool(_payloads(ms, "state")), 10.0)

        seen = led.wait_for("no_fix", 11.0)
        assert seen[-1] == "no_fix", (seen, _safe_status(agent).get("gnss"))
        assert "fix_age_s" not in _safe_status(agent).get("gnss", {}), "really no fix yet"
        seen = led.wait_for("all_good", 15.0)
        assert seen[-1] == "all_good", (seen, _safe_status(agent).get("gnss"))

        # Parked: the reader stops asking the ECU; only the adapter's voltage (ATRV) goes on.
        assert listener.wait_for(
            lambda ms: any(p.get("parked") is True for p in _payloads(ms, "state")), 20.0
        ), agent.stderr()
        # Counters from status files written after the fact (it is rewritten every 2 s), the
        # first leaving a second for a request already on the wire when the ignition went off.
        first = _status_written_after(agent, time.time() + 1.0)
        last = _status_written_after(agent, first["written_unix"] + 4.0)
        parked, later = first["obd"]["counters"], last["obd"]["counters"]
        assert parked["requests"] > 0 and parked["values"] > 0, "the ECU answered while idling"
        assert (later["requests"], later["values"]) == (parked["requests"], parked["values"]), (
            parked,
            later,
        )
        assert later["readings"] >= parked["readings"] + 3, (parked, later)
        assert led.wait_for("all_good", 5.0)[-1] == "all_good", "parked, fix, broker: all good"

        mosquitto.stop()
        seen = led.wait_for("no_broker", 10.0)
        assert seen[-1] == "no_broker", seen
        mosquitto.start()
        seen = led.wait_for("all_good", 15.0)
        assert seen[-1] == "all_good", seen


@pytest.mark.parametrize(
    ("ignition", "message"),
    [
        pytest.param(
            'backend = "rpigpio"',
            "needs RPi.GPIO: install python3-rpi.gpio",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("RPi") is not None,
                reason="on a Pi RPi.GPIO is installed; this checks the message where it is not",
            ),
        ),
        ('backend = "gpiod"\nchip = "/dev/gpiochip-missing"', "gpiochip-missing: cannot request"),
        ('backend = "simulated"', "simulated GPIO needs ignition.line_file"),
    ],
)
def test_unusable_gpio_backend_is_a_clear_setup_error(
    agent_factory: Any, ignition: str, message: str
) -> None:
    agent = agent_factory(extra_toml=f"[ignition]\n{ignition}\n")
    assert agent.proc.wait(20) == 2
    err = agent.stderr()
    assert "key 'ignition.backend'" in err and message in err, err
    assert "Traceback" not in err


def test_without_gpio_the_parked_state_follows_the_rpm_fallback(
    tmp_path: Path, mosquitto: Mosquitto, listener: Listener
) -> None:
    from agent.config import loads
    from agent.daemon import Daemon
    from drivers.samples import OBDReading

    cfg = loads(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[device]\nid = "{DEVICE}"\n'
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        '[gnss]\nenabled = false\n[obd]\nenabled = false\n[ignition]\nbackend = "none"\n'
    )
    daemon = Daemon(cfg)
    daemon.start()
    try:
        # The driver seam: samples arrive through the emit callback every driver is given.
        daemon._emit(OBDReading(daemon.clock.monotonic(), rpm=820.0, speed_kmh=0.0))
        assert listener.wait_for(lambda ms: bool(_payloads(ms, "event/ignition_on")), 10.0)
        assert _payloads(listener.messages, "event/ignition_on")[0]["data"]["source"] == "rpm"
        assert listener.wait_for(
            lambda ms: any(p.get("parked") is False for p in _payloads(ms, "state")), 5.0
        )
        daemon._emit(OBDReading(daemon.clock.monotonic(), rpm=0.0, speed_kmh=0.0))
        assert listener.wait_for(lambda ms: bool(_payloads(ms, "event/ignition_off")), 10.0)
        assert listener.wait_for(
            lambda ms: _payloads(ms, "state")[-1].get("parked") is True, 5.0
        )
        assert daemon.device.parked is True
    finally:
        daemon.stop()
