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
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

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


def describe(topic: str, payload: dict[str, Any]) -> str | None:
    """One readable line for a published message, or None to leave it out."""
    kind = topic.split("/", 3)[-1]
    ts = str(payload.get("ts", ""))[11:19]
    if kind == "state":
        status = "ONLINE" if payload.get("online") else "OFFLINE"
        vin = payload.get("vin") or "-"
        return f"{ts}  state   {status}  v{payload.get('version')}  VIN {vin}"
    if kind == "pos":
        recs = payload.get("records") or []
        count = payload.get("count", len(recs))
        last = recs[-1] if recs else {}
        where = (
            f"{last.get('lat', 0):.5f},{last.get('lon', 0):.5f} "
            f"{last.get('speed_kmh', 0) or 0:.0f} km/h"
            if last
            else f"({payload.get('encoding', 'json')})"
        )
        hist = "  (history)" if payload.get("historical") else ""
        return (
            f"{ts}  pos     {count:3d} records  seq {payload.get('seq')}-{payload.get('seq_last')}"
            f"  last {where}{hist}"
        )
    if kind.startswith("event/"):
        data = payload.get("data") or {}
        keys = ", ".join(f"{k}={v}" for k, v in list(data.items())[:4])
        return f"{ts}  EVENT   {payload.get('type'):<16} seq {payload.get('seq')}  {keys}"
    if kind == "health":
        spool = payload.get("spool", {})
        return f"{ts}  health  spool depth {spool.get('depth', '?')}  seq {payload.get('seq')}"
    if kind == "engine":
        return f"{ts}  engine  {json.dumps(payload.get('data', {}))[:90]}"
    return None


class LiveView:
    def __init__(self, port: int) -> None:
        self.count = 0
        self.positions = 0
        self._last_live = 0.0
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
            print(f"          {msg.topic}: {len(msg.payload)} bytes (not JSON)")
            return
        with self._lock:
            self.count += 1
            if msg.topic.endswith("/live"):
                self.positions += 1
                now = time.monotonic()
                if now - self._last_live < 5.0:
                    return
                self._last_live = now
                line = (
                    f"{str(payload.get('ts', ''))[11:19]}  live    "
                    f"{payload.get('lat', 0):.5f},{payload.get('lon', 0):.5f}  "
                    f"{payload.get('speed_kmh', 0) or 0:.0f} km/h"
                )
            else:
                if msg.topic.endswith("/pos"):
                    self.positions += int(payload.get("count", 0))
                line = describe(msg.topic, payload) or ""
            if line:
                print(line, flush=True)

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
        print(f"demo: mosquitto on 127.0.0.1:{broker.port} (pid {broker.proc and broker.proc.pid})")
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
              f"GNSS {devices['gnss']}, OBD {devices['obd']}")
        view = LiveView(broker.port)
        cfg = _agent_config(work, devices, broker.port)
        agent = subprocess.Popen([_bin("telematics-agent"), "run", "--config", str(cfg)])
        print(f"demo: agent running (pid {agent.pid}), config {cfg}")
        print(f"demo: live view of fleet/v1/# for {seconds:.0f} s (Ctrl-C to stop)\n")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not interrupted:
            if agent.poll() is not None:
                print(f"demo: the agent exited with status {agent.returncode}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print("\ndemo: stopping the agent (it flushes and says offline)")
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
        print(f"demo: stopped everything it started; files left in {work}")


if __name__ == "__main__":
    sys.exit(main())
