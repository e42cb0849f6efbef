"""``telematics-sim run`` as a real process: device paths, NMEA on a pty, truth, unplug, signals."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynmea2
import pytest

from simulator.ignition import read_level
from simulator.model import VehicleModel
from simulator.scenario import load_scenario
from simulator.truth import derive_truth, read_truth

SHORT = """
name = "short"
start_utc = "2026-03-02T07:00:00Z"
seed = 5
[route]
corner_radius_m = 25
waypoints = [[51.3400, 12.3700], [51.3400, 12.3830], [51.3450, 12.3830]]
[gnss]
unplug = [{{ t_s = {unplug_t}, duration_s = 20 }}]
[[plan]]
do = "park"
duration_s = 10
[[plan]]
do = "idle"
duration_s = 15
[[plan]]
do = "drive"
distance_m = 700
speed_kmh = 50
end_speed_kmh = 50
[[plan]]
do = "drive"
distance_m = 150
speed_kmh = 50
decel_mps2 = 4.5
[[plan]]
do = "park"
duration_s = {park_s}
"""


def _scenario(tmp_path: Path, unplug_t: float = 500.0, park_s: float = 20.0) -> Path:
    path = tmp_path / "short.toml"
    path.write_text(SHORT.format(unplug_t=unplug_t, park_s=park_s), encoding="utf-8")
    return path


@pytest.fixture
def sim() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def _start(
    procs: list[subprocess.Popen[str]], *args: str
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15.0)
    assert ready, "no JSON line within 15 s"
    return proc, json.loads(proc.stdout.readline())


def _read_lines(path: str, seconds: float, until: float | None = None) -> Iterator[str]:
    """NMEA lines from the receiver's pty for up to ``seconds`` (stops on hangup)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    buffer = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the device was unplugged
                    return
                raise
            if not chunk:
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\r\n")
            for line in lines:
                yield line.decode("latin-1")
    finally:
        os.close(fd)


def test_run_at_x60_streams_the_model_and_writes_its_truth(
    tmp_path: Path, sim: list[subprocess.Popen[str]]
) -> None:
    scenario = _scenario(tmp_path)
    truth_path = tmp_path / "truth.jsonl"
    run_dir = tmp_path / "run"
    proc, info = _start(
        sim,
        "--scenario",
        str(scenario),
        "--time-scale",
        "60",
        "--truth",
        str(truth_path),
        "--dir",
        str(run_dir),
    )
    assert info == {
        "gnss": str(run_dir / "gnss0"),
        "obd": str(run_dir / "obd0"),
        "ignition": str(run_dir / "ignition"),
        "truth": str(truth_path),
        "time_scale": 60.0,
        "pid": proc.pid,
        "scenario": "short",
    }
    assert Path(info["obd"]).is_symlink() and Path(info["ignition"]).read_text() in ("0\n", "1\n")
    model = VehicleModel(load_scenario(scenario))
    fixes = 0
    for line in _read_lines(info["gnss"], seconds=2.0):
        sentence = pynmea2.parse(line, check=True)
        if isinstance(sentence, pynmea2.RMC) and sentence.status == "A":
            t_s = (
                sentence.datetime.replace(tzinfo=model.scenario.start_utc.tzinfo)
                - model.scenario.start_utc
            ).total_seconds()
            true = model.state_at(t_s)
            assert (
                abs(sentence.latitude - true.lat) < 2e-4
                and abs(sentence.longitude - true.lon) < 3e-4
            )
            if true.speed_kmh > 20:
                assert abs(float(sentence.spd_over_grnd) * 1.852 - true.speed_kmh) < 1.5
            fixes += 1
    assert fixes >= 30  # x60 at 1 Hz: ~60 epochs per real second
    assert proc.wait(timeout=model.duration_s / 60 + 10) == 0
    assert not any(run_dir.iterdir())  # devices and line file removed
    # The truth of the run is what it played: the model's events, none more than a second late.
    x60 = read_truth(truth_path)
    direct = [json.loads(e.to_json()) for e in derive_truth(model)]
    _assert_played_in_time(x60, direct)
    assert "harsh_brake" in [e["type"] for e in x60]
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "truth", "--scenario", str(scenario)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert [json.loads(line) for line in out.stdout.splitlines()] == direct


def _assert_played_in_time(played: list[dict[str, Any]], model: list[dict[str, Any]]) -> None:
    """The same events as the model's truth (data included), each played at most 1 s late."""
    assert [(e["type"], e["data"]) for e in played] == [(e["type"], e["data"]) for e in model]
    for a, b in zip(played, model, strict=True):
        assert 0.0 <= a["t_s"] - b["t_s"] <= 1.0, (a, b)


# Under a minute of simulated time with an event on every channel: the ignition line (on at 4 s,
# off at 32.2 s), the receiver (trip start 9.2 s, harsh brake 29.5 s), the adapter (a DTC at 20 s).
BRIEF = """
name = "brief"
start_utc = "2026-03-02T07:00:00Z"
seed = 5
[route]
corner_radius_m = 25
waypoints = [[51.3400, 12.3700], [51.3400, 12.3830], [51.3450, 12.3830]]
[[dtc]]
t_s = 20
set = ["P0401"]
[[plan]]
do = "park"
duration_s = 4
[[plan]]
do = "idle"
duration_s = 4
[[plan]]
do = "drive"
distance_m = 160
speed_kmh = 45
end_speed_kmh = 45
[[plan]]
do = "drive"
distance_m = 60
speed_kmh = 45
decel_mps2 = 4.5
[[plan]]
do = "park"
duration_s = 8
"""


@dataclass
class Observed:
    """What a test saw of one live run: receiver epochs and line changes as they arrived."""

    rmc: list[tuple[float, float, float]]  # (arrival, monotonic s; stamp, simulated s; speed m/s)
    ignition: list[tuple[float, bool]]  # (arrival, monotonic s; level) at each change seen
    truth: list[dict[str, Any]]


def _observe(
    sim: list[subprocess.Popen[str]], scenario: Path, scale: int, tmp_path: Path
) -> Observed:
    """Run ``scenario`` at ``scale`` to its end, reading the receiver and polling the line."""
    model = VehicleModel(load_scenario(scenario))
    truth_path = tmp_path / f"truth-x{scale}.jsonl"
    proc, info = _start(
        sim,
        "--scenario",
        str(scenario),
        "--time-scale",
        str(scale),
        "--truth",
        str(truth_path),
        "--dir",
        str(tmp_path / f"run-x{scale}"),
    )
    start_utc = model.scenario.start_utc
    rmc: list[tuple[float, float, float]] = []
    ignition: list[tuple[float, bool]] = []
    fd = os.open(info["gnss"], os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    buffer = b""
    deadline = time.monotonic() + model.duration_s / scale + 10.0
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):  # removed at the end
                level = read_level(info["ignition"])
                if not ignition or ignition[-1][1] != level:
                    ignition.append((time.monotonic(), level))
            ready, _, _ = select.select([fd], [], [], 0.005)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                assert exc.errno == errno.EIO, exc
                break  # the run ended and unplugged its devices
            if not chunk:
                break  # the same, seen as end of file
            arrived = time.monotonic()
            *lines, buffer = (buffer + chunk).split(b"\r\n")
            for line in lines:
                sentence = pynmea2.parse(line.decode("ascii"), check=True)
                if isinstance(sentence, pynmea2.RMC) and sentence.datetime is not None:
                    stamp_s = (
                        sentence.datetime.replace(tzinfo=start_utc.tzinfo) - start_utc
                    ).total_seconds()
                    rmc.append((arrived, stamp_s, float(sentence.spd_over_grnd) * 1852 / 3600))
    finally:
        os.close(fd)
    assert proc.wait(timeout=10) == 0
    return Observed(rmc, ignition, read_truth(truth_path))


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def _brake_seen(rmc: list[tuple[float, float, float]]) -> float:
    """Where the receiver's speeds show the brake begin: the middle of the first epoch interval
    that loses more than 1 m/s (a harsh brake loses 3 m/s and more in a second)."""
    for (_, t0, v0), (_, t1, v1) in itertools.pairwise(rmc):
        if v1 < v0 - 1.0:
            return (t0 + t1) / 2
    raise AssertionError("no brake in the receiver's speeds")


@pytest.mark.slow  # the x1 run takes its 40 s
def test_truth_of_a_run_at_x60_matches_the_same_run_at_x1(
    tmp_path: Path, sim: list[subprocess.Popen[str]]
) -> None:
    """Each run's truth comes from what its devices played (simulator.playback), so a run that
    loses time at x60 (a talker sleeping too long, a line set late) writes a different truth."""
    scenario = tmp_path / "brief.toml"
    scenario.write_text(BRIEF, encoding="utf-8")
    model = [json.loads(e.to_json()) for e in derive_truth(VehicleModel(load_scenario(scenario)))]
    assert [e["type"] for e in model] == [
        "ignition_on", "trip_start", "dtc_set", "harsh_brake", "ignition_off"
    ]
    x60 = _observe(sim, scenario, 60, tmp_path)
    x1 = _observe(sim, scenario, 1, tmp_path)  # about 40 s
    _assert_played_in_time(x60.truth, model)
    _assert_played_in_time(x1.truth, model)
    assert [e["type"] for e in x60.truth] == [e["type"] for e in x1.truth]
    for a, b in zip(x60.truth, x1.truth, strict=True):
        assert abs(a["t_s"] - b["t_s"]) <= 1.0, (a, b)
    for scale, seen in ((60, x60), (1, x1)):
        # Every epoch to the end (the first may go before the test opens the port, the one at
        # 40 s races the end at 40.2 s), in order, with simulated time running `scale` times
        # faster than real time.
        stamps = [t for _, t, _ in seen.rmc]
        assert stamps[0] <= 3.0 and stamps[-1] >= 39.0
        assert stamps == [stamps[0] + n for n in range(len(stamps))]
        rate = _slope([(arrived, t) for arrived, t, _ in seen.rmc])
        assert rate == pytest.approx(scale, rel=0.05), f"x{scale} ran at x{rate:.2f}"
        # The brake is in the receiver's speeds where the run's truth puts it.
        brake = next(e for e in seen.truth if e["type"] == "harsh_brake")
        assert abs(_brake_seen(seen.rmc) - brake["t_s"]) <= 1.0
    # At x1 the ignition line flips when the truth says, on the receiver's clock: t = 0 is when
    # epoch 0 was written (its earliest possible arrival, found over all epochs).
    t0 = min(arrived - t for arrived, t, _ in x1.rmc)
    flips = [((at - t0), level) for at, level in x1.ignition[1:]]
    truth_flips = [
        (e["t_s"], e["type"] == "ignition_on") for e in x1.truth if "ignition" in e["type"]
    ]
    assert [level for _, level in flips] == [level for _, level in truth_flips]
    for (seen_s, _), (truth_s, _) in zip(flips, truth_flips, strict=True):
        assert abs(seen_s - truth_s) <= 1.0


def test_truth_of_a_stopped_run_has_only_what_it_reached(
    tmp_path: Path, sim: list[subprocess.Popen[str]]
) -> None:
    scenario = tmp_path / "brief.toml"
    scenario.write_text(BRIEF, encoding="utf-8")
    truth_path = tmp_path / "truth.jsonl"
    proc, info = _start(
        sim, "--scenario", str(scenario), "--time-scale", "10", "--truth", str(truth_path)
    )
    for line in _read_lines(info["gnss"], seconds=5.0):
        sentence = pynmea2.parse(line, check=True)
        if isinstance(sentence, pynmea2.RMC) and sentence.timestamp.second >= 12:
            break  # the drive is at 12 s: after the trip start, before the DTC at 20 s
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert [e["type"] for e in read_truth(truth_path)] == ["ignition_on", "trip_start"]


def test_ignition_line_follows_the_scenario(
    tmp_path: Path, sim: list[subprocess.Popen[str]]
) -> None:
    proc, info = _start(
        sim,
        "--scenario",
        str(_scenario(tmp_path)),
        "--time-scale",
        "10",
        "--dir",
        str(tmp_path / "run"),
    )
    line = Path(info["ignition"])
    assert line.read_text() == "0\n"  # parked for the first 10 s (1 s real)
    deadline = time.monotonic() + 5.0
    while line.read_text() != "1\n":
        assert time.monotonic() < deadline, "ignition never turned on"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_receiver_unplug_and_replug(tmp_path: Path, sim: list[subprocess.Popen[str]]) -> None:
    scenario = _scenario(tmp_path, unplug_t=20.0, park_s=200.0)
    proc, info = _start(
        sim, "--scenario", str(scenario), "--time-scale", "10", "--dir", str(tmp_path / "run")
    )
    link = info["gnss"]
    before = list(_read_lines(link, seconds=6.0))  # ends with EIO when unplugged at 2 s real
    assert any(line.startswith("$GPRMC") for line in before)
    deadline = time.monotonic() + 5.0
    while os.path.lexists(link):
        assert time.monotonic() < deadline, "symlink not removed on unplug"
        time.sleep(0.02)
    with pytest.raises(FileNotFoundError):
        os.open(link, os.O_RDONLY | os.O_NOCTTY)
    deadline = time.monotonic() + 6.0
    while not os.path.lexists(link):
        assert time.monotonic() < deadline, "receiver never came back"
        time.sleep(0.02)
    after = [pynmea2.parse(line, check=True) for line in _read_lines(link, seconds=1.5)]
    stamps = [s.timestamp for s in after if isinstance(s, pynmea2.RMC) and s.timestamp]
    assert stamps and all(s.second >= 40 or s.minute >= 1 for s in stamps)  # after the gap
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_sigterm_with_hold_cleans_up(sim: list[subprocess.Popen[str]]) -> None:
    proc, info = _start(
        sim,
        "--scenario",
        "cold_start",
        "--time-scale",
        "60",
        "--hold",
        "--elm-variant",
        "clone-v2.1",
        "--gnss-hz",
        "10",
        "--talker",
        "GN",
    )
    run_dir = Path(info["gnss"]).parent
    assert run_dir.is_dir()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not run_dir.exists()


def test_bad_scenario_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(_scenario(tmp_path).read_text().replace("speed_kmh = 50", "speed_kmh = -5", 1))
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "run", "--scenario", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert f"{path}: plan[2].speed_kmh: must be >= 5" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "run",
            "--scenario",
            "cold_start",
            "--time-scale",
            "600",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "between 1 and 60" in out.stderr


def test_python_obd_reads_the_live_van_through_run(sim: list[subprocess.Popen[str]]) -> None:
    """Unmodified python-obd on the run's obd0: values are the model's during warm-up idling."""
    import obd  # the real library, over the real pseudo-terminal

    model = VehicleModel(load_scenario("cold_start"))
    idle = model.state_at(50.0)  # idling from 10 s to 100 s simulated: 2..20 s real at x5
    assert idle.engine_running and idle.speed_kmh == 0.0
    _, info = _start(sim, "--scenario", "cold_start", "--time-scale", "5")
    time.sleep(2.5)
    connection = obd.OBD(info["obd"], fast=False, timeout=2)
    try:
        assert connection.status() == obd.OBDStatus.CAR_CONNECTED
        assert connection.query(obd.commands.RPM).value.magnitude == pytest.approx(idle.rpm, abs=1)
        assert connection.query(obd.commands.SPEED).value.magnitude == 0
        fuel = connection.query(obd.commands.FUEL_RATE).value.magnitude
        assert fuel == pytest.approx(idle.fuel_rate_lph, abs=0.06)
        volts = connection.query(obd.commands.ELM_VOLTAGE).value.magnitude
        assert volts == pytest.approx(idle.battery_v, abs=0.1)
        maf = connection.query(obd.commands.MAF).value.magnitude
        assert maf == pytest.approx(idle.maf_gps, abs=0.5)
    finally:
        connection.close()


def test_faults_on_demand_by_signal(tmp_path: Path, sim: list[subprocess.Popen[str]]) -> None:
    proc, info = _start(
        sim,
        "--scenario",
        str(_scenario(tmp_path)),
        "--time-scale",
        "10",
        "--dir",
        str(tmp_path / "run"),
    )
    lines = _read_lines(info["gnss"], seconds=3.0)
    seen: list[str] = []
    for line in lines:
        seen.append(line)
        if len(seen) == 10:
            proc.send_signal(signal.SIGUSR1)  # 64 garbage bytes
            proc.send_signal(signal.SIGUSR2)  # 3 bad checksums
    glued = [line for line in seen if not line.startswith("$") and "$" in line]
    bad = 0
    for line in seen:
        try:
            pynmea2.parse(line[line.index("$") :], check=True)
        except pynmea2.ChecksumError:
            bad += 1
        except ValueError:
            pass  # a line of pure garbage has no "$"
    assert len(glued) == 1 and bad == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
