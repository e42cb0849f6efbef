"""OBD benchmark: PID values per second from the emulated ELM327, our reader vs plain python-obd.

Run: ``.venv/bin/python -m bench.bench_obd [SECONDS]``. Figures, not assertions. Both sides talk
to the same emulator over a pseudo-terminal, in the same run, and read the same twelve PIDs as
fast as they can (the poll plan's three groups back to back): ours with multi-PID requests (and,
as a second figure, against a clone that cannot do them), the baseline with python-obd's
``query()`` one PID at a time (its "fast" mode on, the default). Connection time is excluded.

The emulator charges what a real adapter costs per request, not a flat delay: every byte at
38400 baud both ways (8N1), a 30 ms ECU response latency, 1 ms per further CAN frame of a
multi-frame reply, and the adapter's wait for more replies unless a response-count digit ends
it (both sides send one). So a six-PID request is not six times cheaper than six one-PID ones.

Figures: PID values per second is the like-for-like throughput (the target ratio is on it).
A reading is one sample: the plain loop's readings are single values, so its readings/s is its
values/s; the reader emits one reading per poll round with several values, so both are printed.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import obd
from obd import OBDCommand
from obd.protocols import ECU

from drivers.obd import OBDReader, OBDSettings
from drivers.samples import Sample, VehicleInfo
from simulator.elm327 import CAN_FRAME_S, DEFAULT_BAUD, ELM327Server
from simulator.state import FixedState, running_van

LATENCY_S = 0.03
TARGET_RATIO = 3.0

STATE = running_van()


def _odometer(messages: list[Any]) -> float:
    return int.from_bytes(bytes(messages[0].data[2:6]), "big") / 10.0


def _reader_rate(variant: str, seconds: float) -> tuple[float, float]:
    """(PID values, readings) per second from OBDReader with every group always due."""
    with tempfile.TemporaryDirectory() as tmp:
        server = ELM327Server(
            FixedState(STATE), Path(tmp) / "obd0", variant=variant, latency_s=LATENCY_S
        )
        server.start()
        ready = threading.Event()

        def emit(sample: Sample) -> None:
            if isinstance(sample, VehicleInfo):
                ready.set()

        settings = OBDSettings(
            port=str(server.path),
            fast_hz=1000.0,
            medium_hz=1000.0,
            slow_interval_s=0.001,
            voltage_interval_s=3600.0,
            dtc_interval_s=3600.0,
        )
        reader = OBDReader(settings, emit, time.monotonic)
        reader.start()
        try:
            if not ready.wait(20.0):
                return 0.0, 0.0
            time.sleep(0.2)  # let the first round after the probe settle
            before, start = reader.stats(), time.monotonic()
            time.sleep(seconds)
            after, elapsed = reader.stats(), time.monotonic() - start
        finally:
            reader.stop()
            server.stop()
    values = after.get("values", 0) - before.get("values", 0)
    readings = after.get("readings", 0) - before.get("readings", 0)
    return values / elapsed, readings / elapsed


def _plain_rate(seconds: float) -> float:
    """PID values per second from python-obd's query(), one PID per request (and reading)."""
    c = obd.commands
    odometer = OBDCommand("ODOMETER", "Odometer", b"01A6", 6, _odometer, ECU.ENGINE, True)
    commands = [
        c.SPEED, c.RPM,
        c.ENGINE_LOAD, c.FUEL_RATE, c.MAF, c.INTAKE_PRESSURE, c.INTAKE_TEMP,
        c.COOLANT_TEMP, c.FUEL_LEVEL, c.RUN_TIME, c.DISTANCE_SINCE_DTC_CLEAR, odometer,
    ]  # fmt: skip
    logger = obd.logger
    logger.setLevel(100)
    with tempfile.TemporaryDirectory() as tmp:
        server = ELM327Server(FixedState(STATE), Path(tmp) / "obd0", latency_s=LATENCY_S)
        server.start()
        connection = obd.OBD(str(server.path), baudrate=38400)
        try:
            values = 0
            start = time.monotonic()
            deadline = start + seconds
            while time.monotonic() < deadline:
                for command in commands:
                    if not connection.query(command, force=True).is_null():
                        values += 1
            elapsed = time.monotonic() - start
        finally:
            connection.close()
            server.stop()
    return values / elapsed


def run(seconds: float = 10.0) -> dict[str, float]:
    plain = _plain_rate(seconds)
    multi, multi_readings = _reader_rate("v1.5", seconds)
    clone, clone_readings = _reader_rate("clone-v2.1", seconds)
    return {
        "latency_ms": LATENCY_S * 1000.0,
        "baud": float(DEFAULT_BAUD),
        "can_frame_ms": CAN_FRAME_S * 1000.0,
        "plain_python_obd_values_per_s": plain,  # = its readings/s: one PID per reading
        "reader_multi_pid_values_per_s": multi,
        "reader_multi_pid_readings_per_s": multi_readings,
        "reader_clone_fallback_values_per_s": clone,
        "reader_clone_fallback_readings_per_s": clone_readings,
        "ratio_multi_vs_plain_values": multi / plain if plain else 0.0,
        "ratio_clone_vs_plain_values": clone / plain if plain else 0.0,
        "target_ratio": TARGET_RATIO,
    }


if __name__ == "__main__":
    figures = run(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:10.2f}")
