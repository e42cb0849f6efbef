"""Daemon benchmark: startup to READY=1, live RSS and CPU against the simulator, replay CPU.

Baselines measured in the same run:
- startup: a bare interpreter importing the same third-party libraries;
- live: a naive reference agent (pyserial + pynmea2 on every sentence + one paho QoS 1 message
  per fix) reading the same simulated receiver for the same time;
- replay: pynmea2 alone parsing the capture's NMEA (no events, no spool, no encoding).

Environment: BENCH_LIVE_SECONDS (default 120), BENCH_STARTUP_RUNS (default 5).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simulator.broker import Mosquitto

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _rss_mb(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE / 1e6


def _config(work: Path, *, port: int, gnss: str = "", obd: str = "", ignition: str = "") -> Path:
    cfg = work / "agent.toml"
    cfg.write_text(
        f"""[agent]
state_dir = "{work / "state"}"
log_level = "warning"
[device]
id = "bench-van"
[mqtt]
host = "127.0.0.1"
port = {port}
[gnss]
enabled = {"true" if gnss else "false"}
port = "{gnss or "/dev/null"}"
[obd]
enabled = {"true" if obd else "false"}
port = "{obd or "/dev/null"}"
fast_hz = 5.0
[ignition]
backend = "{"simulated" if ignition else "none"}"
line_file = "{ignition}"
"""
    )
    return cfg


def startup(runs: int) -> dict[str, float]:
    times = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "broker").mkdir()
        broker = Mosquitto(work / "broker")
        broker.start()
        try:
            cfg = _config(work, port=broker.port)
            sock_path = work / "notify.sock"
            for _ in range(runs):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.bind(str(sock_path))
                sock.settimeout(30)
                env = dict(os.environ, NOTIFY_SOCKET=str(sock_path))
                started = time.monotonic()
                proc = subprocess.Popen(
                    [_bin("telematics-agent"), "run", "--config", str(cfg)], env=env
                )
                try:
                    while True:
                        msg = sock.recv(4096).decode()
                        if "READY=1" in msg.split("\n"):
                            times.append(time.monotonic() - started)
                            break
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
                    sock.close()
                    sock_path.unlink()
        finally:
            broker.stop()
    base = []
    code = "import paho.mqtt.client, persistqueue, serial, obd, pynmea2"
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True)
        base.append(time.monotonic() - started)
    ready = statistics.median(times)
    imports = statistics.median(base)
    return {
        "startup_ready_s": ready,
        "startup_baseline_imports_s": imports,
        "startup_ratio_vs_imports": ready / imports,
        "startup_target_s": 1.5,
    }


NAIVE = r"""
import json, sys, time, serial, pynmea2
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, broker_port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="naive")
c.connect("127.0.0.1", broker_port)
c.loop_start()
ser = serial.serial_for_url(port, 9600, timeout=1)
end = time.monotonic() + seconds
while time.monotonic() < end:
    line = ser.readline().decode("ascii", "replace").strip()
    try:
        msg = pynmea2.parse(line)
    except Exception:
        continue
    if isinstance(msg, pynmea2.types.talker.RMC) and msg.status == "A":
        c.publish("naive/pos", json.dumps({"lat": msg.latitude, "lon": msg.longitude,
                  "ts": str(msg.datetime), "speed": msg.spd_over_grnd}), qos=1)
"""


def _switches(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far: each is a wake-up (or a preemption)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        total += sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches" in line)
    return total


def _watch(pid: int, warmup_s: float, seconds: float) -> tuple[float, float, float, float]:
    """(CPU share of one core, median RSS MB, max RSS MB, wake-ups/s) over ``seconds`` after a
    warm-up."""
    time.sleep(warmup_s)
    cpu0, sw0, t0 = _cpu_s(pid), _switches(pid), time.monotonic()
    rss = []
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb(pid))
        time.sleep(1.0)
    elapsed = time.monotonic() - t0
    share = (_cpu_s(pid) - cpu0) / elapsed
    return share, statistics.median(rss), max(rss), (_switches(pid) - sw0) / elapsed


def live(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "broker").mkdir()
        broker = Mosquitto(work / "broker")
        broker.start()
        sim = subprocess.Popen(
            [_bin("telematics-sim"), "run", "--scenario", "highway", "--time-scale", "1",
             "--gnss-hz", "10", "--hold", "--dir", str(work / "van")],
            stdout=subprocess.PIPE,
        )
        try:
            assert sim.stdout is not None
            devices = json.loads(sim.stdout.readline())
            cfg = _config(
                work, port=broker.port, gnss=devices["gnss"], obd=devices["obd"],
                ignition=devices["ignition"],
            )
            agent = subprocess.Popen([_bin("telematics-agent"), "run", "--config", str(cfg)])
            try:
                share, rss_med, rss_max, wakeups = _watch(agent.pid, 15.0, seconds)
            finally:
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=10)
            naive = subprocess.Popen(
                [sys.executable, "-c", NAIVE, devices["gnss"], str(broker.port),
                 str(seconds + 20)]
            )
            try:
                n_share, n_rss, _, n_wakeups = _watch(naive.pid, 10.0, seconds)
            finally:
                naive.kill()
                naive.wait(timeout=10)
        finally:
            sim.send_signal(signal.SIGTERM)
            sim.wait(timeout=10)
            broker.stop()
    return {
        "live_seconds": seconds,
        "live_cpu_pct_one_core": share * 100,
        "live_rss_mb_median": rss_med,
        "live_rss_mb_max": rss_max,
        "live_wakeups_per_s": wakeups,
        "live_baseline_naive_wakeups_per_s": n_wakeups,
        "live_baseline_naive_cpu_pct": n_share * 100,
        "live_baseline_naive_rss_mb": n_rss,
        "live_cpu_ratio_vs_naive": share / n_share if n_share else float("nan"),
        "live_target_rss_mb": 40.0,
        "live_target_cpu_pct": 1.0,
    }


def replay() -> dict[str, float]:
    import pynmea2

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cap = work / "highway.capture"
        subprocess.run(
            [_bin("telematics-sim"), "record", "--scenario", "highway", "--out", str(cap)],
            check=True, stdout=subprocess.DEVNULL,
        )
        cfg = _config(work, port=1883)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [_bin("telematics-agent"), "replay", str(cap), "--config", str(cfg),
             "--out", str(work / "out.jsonl")],
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        last_t = 0.0
        lines: list[str] = []
        with cap.open() as f:
            next(f)
            for raw in f:
                rec: dict[str, Any] = json.loads(raw)
                last_t = max(last_t, float(rec.get("t", 0.0)))
                if rec.get("dev") == "gnss" and "data" in rec:
                    lines.extend(rec["data"].splitlines())
        hours = last_t / 3600
        t0 = time.process_time()
        for line in lines:
            with contextlib.suppress(pynmea2.ParseError):
                pynmea2.parse(line)
        base = time.process_time() - t0
    return {
        "replay_van_hours": hours,
        "replay_cpu_s_per_van_hour": cpu / hours,
        "replay_baseline_pynmea2_parse_s_per_van_hour": base / hours,
        "replay_ratio_vs_pynmea2_parse": cpu / base if base else float("nan"),
        "replay_target_s_per_van_hour": 4.0,
    }


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    out.update(startup(int(os.environ.get("BENCH_STARTUP_RUNS", "5"))))
    out.update(replay())
    out.update(live(float(os.environ.get("BENCH_LIVE_SECONDS", "120"))))
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k:45s} {v:.3f}")
