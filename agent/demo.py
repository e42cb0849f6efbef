"""Demo: a simulated van, a local broker, the agent, and a live view of what the agent publishes.

``make demo`` runs this. Everything it starts (mosquitto, the simulator, the agent) it stops
again by PID when the time is up (``DEMO_SECONDS``, default 120) or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.contract import topic_role
from agent.encoder import batch_records
from simulator.broker import Mosquitto

SCENARIO = os.environ.get("DEMO_SCENARIO", "urban_delivery")
TIME_SCALE = os.environ.get("DEMO_TIME_SCALE", "10")
DEVICE_ID = "demo-van-01"


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _agent_config(work: Path, devices: dict[str, Any], port: int) -> Path:
    cfg = work / "agent.toml"
    cfg.write_text(
        f"""[agent]
state_dir = "{work / "state"}"
time_scale = {float(TIME_SCALE)}
log_level = "warning"

[device]
id = "{DEVICE_ID}"

[mqtt]
host = "127.0.0.1"
port = {port}
backoff_min_s = 0.2
backoff_max_s = 2.0

[gnss]
port = "{devices["gnss"]}"

[obd]
port = "{devices["obd"]}"
baud = 38400

[ignition]
backend = "simulated"
line_file = "{devices["ignition"]}"

[spool]
flush_interval_s = 10.0

[health]
interval_s = 60.0
"""
    )
    return cfg


def _clock(payload: Mapping[str, Any]) -> str:
    """HH:MM:SS of the payload's ``ts`` (the device's idea of UTC), or blanks."""
    ts = str(payload.get("ts", ""))
    return ts[11:19] if len(ts) >= 19 else " " * 8


def _where(rec: Mapping[str, Any]) -> str:
    lat, lon = rec.get("lat"), rec.get("lon")
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return "(no position)"
    speed = rec.get("speed_kmh")
    return f"{lat:.5f},{lon:.5f}  {speed if isinstance(speed, (int, float)) else 0:.0f} km/h"


# What the engine line shows, in this order, when the summary has it.
_ENGINE_FIGURES = (
    ("fuel_used_l", "fuel", " L"),
    ("idle_s", "idle", " s"),
    ("rpm_avg", "rpm", ""),
    ("speed_kmh_avg", "speed", " km/h"),
    ("coolant_c", "coolant", " C"),
    ("fuel_level_pct", "tank", " %"),
    ("voltage_v", "battery", " V"),
)


def describe(topic: str, payload: Mapping[str, Any]) -> str:
    """One readable line for a message seen on the broker: every v1 kind, and anything else."""
    role = topic_role(topic)
    kind = role.schema if role is not None else ""
    ts = _clock(payload)
    if kind == "state":
        status = "ONLINE" if payload.get("online") else "OFFLINE"
        parked = payload.get("parked")
        ignition = "" if parked is None else "  parked" if parked else "  ignition on"
        vin = payload.get("vin") or "-"
        return f"{ts}  state   {status}  v{payload.get('version')}  VIN {vin}{ignition}"
    if kind == "live":
        return f"{ts}  live    {_where(payload)}  seq {payload.get('seq')}"
    if kind == "pos":
        try:
            records = batch_records(payload)
        except (ValueError, KeyError, TypeError):
            records = []
        last = f"last {_where(records[-1])}" if records else "(records unreadable)"
        hist = "  (history)" if payload.get("historical") else ""
        zipped = "  zlib" if payload.get("encoding") else ""
        return (
            f"{ts}  pos     {payload.get('count', len(records)):3d} records"
            f"  seq {payload.get('seq')}-{payload.get('seq_last')}  {last}{zipped}{hist}"
        )
    if kind == "event":
        data = payload.get("data") or {}
        keys = ", ".join(f"{k}={v}" for k, v in list(data.items())[:4])
        return f"{ts}  EVENT   {payload.get('type', '?'):<16} seq {payload.get('seq')}  {keys}"
    if kind == "health":
        spool = payload.get("spool") or {}
        mqtt_link = payload.get("mqtt") or {}
        link = "up" if mqtt_link.get("connected") else "down" if mqtt_link else "?"
        return (
            f"{ts}  health  spool depth {spool.get('depth', '?')}  broker {link}"
            f"  seq {payload.get('seq')}"
        )
    if kind == "engine":
        data = payload.get("data") or {}
        window = data.get("window_s")
        parts = [f"{window:g} s" if isinstance(window, (int, float)) else "? s"]
        for key, label, unit in _ENGINE_FIGURES:
            if isinstance(data.get(key), (int, float)):
                parts.append(f"{label} {data[key]:g}{unit}")
        return f"{ts}  engine  {'  '.join(parts)}  seq {payload.get('seq')}"
    if kind == "cmd_result":
        name = role.name if role is not None else "?"
        outcome = "ok" if payload.get("ok") else f"FAILED: {payload.get('error', '')}"[:80]
        return f"{ts}  result  {name} (id {payload.get('id')})  {outcome}"
    if kind.startswith("cmd_"):
        name = role.name if role is not None else "?"
        return f"{' ' * 8}  cmd     {name} (id {payload.get('id')})"
    if kind == "check":
        return f"{ts}  check   technician self-test publish"
    return f"{' ' * 8}  other   {topic}: {json.dumps(payload)[:80]}"


class LiveView:
    """Prints one line per message on ``fleet/v1/#``; live positions at most every 5 s."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.positions = 0
        self._last_live = -1e9
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-viewer")
        self.client.on_connect = lambda c, *a: c.subscribe("fleet/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            print(f"          {msg.topic}: {len(msg.payload)} bytes (not a JSON object)")
            return
        with self._lock:
            self.count += 1
            if msg.topic.endswith("/live"):
                self.positions += 1
                # At x10 a live position arrives every 0.1 s: show one every 5 s.
                now = time.monotonic()
                if now - self._last_live < 5.0:
                    return
                self._last_live = now
            elif msg.topic.endswith("/pos"):
                self.positions += int(payload.get("count", 0))
            print(describe(msg.topic, payload), flush=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _stop(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        print(f"demo: {name} did not stop in 8 s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=5)


def main() -> int:
    seconds = float(os.environ.get("DEMO_SECONDS", "120"))
    work = Path(tempfile.mkdtemp(prefix="telematics-demo-"))
    (work / "broker").mkdir()
    broker = Mosquitto(work / "broker")
    sim: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    view: LiveView | None = None
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    try:
        broker.start()
        # flush: the PIDs and paths must show at once also when stdout is a pipe (make demo | tee)
        print(f"demo: mosquitto on 127.0.0.1:{broker.port} (pid {broker.proc and broker.proc.pid})",
              flush=True)
        sim = subprocess.Popen(
            [_bin("telematics-sim"), "run", "--scenario", SCENARIO,
             "--time-scale", TIME_SCALE, "--dir", str(work / "van"), "--hold"],
            stdout=subprocess.PIPE,
        )
        assert sim.stdout is not None
        first = sim.stdout.readline()
        if not first:
            print("demo: the simulator did not start", file=sys.stderr)
            return 1
        devices = json.loads(first)
        print(f"demo: simulated van '{SCENARIO}' x{TIME_SCALE} (pid {sim.pid}): "
              f"GNSS {devices['gnss']}, OBD {devices['obd']}", flush=True)
        view = LiveView(broker.port)
        cfg = _agent_config(work, devices, broker.port)
        agent = subprocess.Popen([_bin("telematics-agent"), "run", "--config", str(cfg)])
        print(f"demo: agent running (pid {agent.pid}), config {cfg}", flush=True)
        print(f"demo: live view of fleet/v1/# for {seconds:.0f} s (Ctrl-C to stop)\n", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not interrupted:
            if agent.poll() is not None:
                print(f"demo: the agent exited with status {agent.returncode}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("\ndemo: stopping the agent (it flushes and says offline)", flush=True)
        _stop(agent, "agent")
        time.sleep(0.5)
        if view is not None:
            print(f"demo: {view.count} messages seen, {view.positions} positions")
        return 0
    finally:
        _stop(agent, "agent")
        if view is not None:
            view.close()
        _stop(sim, "simulator")
        broker.stop()
        print(f"demo: stopped everything it started; files left in {work}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
