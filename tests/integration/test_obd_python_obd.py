"""Unmodified python-obd against the emulated ELM327 over a real pseudo-terminal."""

from __future__ import annotations

import math
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import obd
import pytest
from obd import OBDCommand
from obd.protocols import ECU

from simulator.elm327 import ELM327Server
from simulator.model import DT_S, LiveVehicle, VehicleModel
from simulator.scenario import parse_scenario
from simulator.state import FixedState, StateSource, running_van

STATE = running_van(dtcs=("P0301",))

# A cold van warms up idling for 10 minutes (the oil lags the coolant), then pulls away: every
# engine value moves while python-obd reads.
PULLING_AWAY = """
[vehicle]
ambient_c = 4.0
coolant_c = 45.0
odometer_km = 70321.0
[route]
waypoints = [[52.0, 13.0], [52.0, 13.06]]
[[plan]]
do = "idle"
duration_s = 600
[[plan]]
do = "drive"
distance_m = 3000
speed_kmh = 50
[[dtc]]
t_s = 0
set = ["P0301"]
"""


def _odometer(messages: list[object]) -> float:
    data = messages[0].data  # type: ignore[attr-defined]
    return int.from_bytes(bytes(data[2:6]), "big") / 10.0


# python-obd 0.7.3 has no PID A6; its documented extension point is a custom OBDCommand.
ODOMETER = OBDCommand("ODOMETER", "Odometer", b"01A6", 6, _odometer, ECU.ENGINE, True)

# Data lengths of the PIDs the multi-PID commands below ask for (SAE J1979).
_LENGTHS = {0x0D: 1, 0x0C: 2, 0x04: 1, 0x05: 1, 0x0F: 1, 0x10: 2, 0x0B: 1}


def _split_pids(messages: list[object]) -> dict[int, bytes]:
    """A multi-PID mode 01 reply, ``41 pid value [pid value ...]``, as PID -> value bytes."""
    data = bytes(messages[0].data)  # type: ignore[attr-defined]
    out: dict[int, bytes] = {}
    i = 1
    while i < len(data):
        pid = data[i]
        out[pid] = data[i + 1 : i + 1 + _LENGTHS[pid]]
        i += 1 + _LENGTHS[pid]
    return out


SPEED_AND_RPM = OBDCommand(
    "SPEED_RPM", "Speed and RPM", b"010D0C", 0, _split_pids, ECU.ENGINE, False
)
# Six PIDs: the mode byte and six PIDs fill the seven data bytes of one CAN frame.
SIX_PIDS = OBDCommand("SIX", "Six PIDs", b"010D0C04050F10", 0, _split_pids, ECU.ENGINE, False)
SEVEN_PIDS = OBDCommand(
    "SEVEN", "Seven PIDs", b"010D0C04050F100B", 0, _split_pids, ECU.ENGINE, False
)


@contextmanager
def served(
    tmp_path: Path, source: StateSource, variant: str = "v1.5", protocol: str | None = None
) -> Iterator[tuple[obd.OBD, ELM327Server]]:
    server = ELM327Server(source, tmp_path / "obd0", variant=variant, latency_s=0.01)
    server.start()
    # protocol=None runs python-obd's automatic search (three seconds of fixed waits);
    # "6" (CAN 11/500) skips it.
    connection = obd.OBD(str(server.path), baudrate=38400, protocol=protocol)
    try:
        yield connection, server
    finally:
        connection.close()
        server.stop()


@pytest.fixture
def van() -> FixedState:
    return FixedState(STATE)


@pytest.fixture
def python_obd(
    tmp_path: Path, van: FixedState, request: pytest.FixtureRequest
) -> Iterator[tuple[obd.OBD, ELM327Server]]:
    variant, protocol = getattr(request, "param", ("v1.5", None))
    with served(tmp_path, van, variant, protocol) as pair:
        yield pair


class ModelWindow:
    """The vehicle model's values while one request was in flight, for a live van."""

    def __init__(self, live: LiveVehicle) -> None:
        self.live = live

    def range(self, field: str, t0_mono: float, t1_mono: float) -> tuple[float, float]:
        a = (t0_mono - self.live.start_mono_s) * self.live.time_scale
        b = (t1_mono - self.live.start_mono_s) * self.live.time_scale
        # Engine values step every DT_S; half a step apart, every step in [a, b] is seen.
        n = max(2, math.ceil((b - a) / (DT_S / 2)) + 1)
        values = [
            float(getattr(self.live.model.state_at(a + (b - a) * i / (n - 1)), field))
            for i in range(n)
        ]
        return min(values), max(values)

    def check(self, name: str, value: float, field: str, lsb: float, t0: float, t1: float) -> None:
        """``value`` within one encoding step of what the model had while it was asked for."""
        low, high = self.range(field, t0, t1)
        assert low - lsb <= value <= high + lsb, (name, value, field, low, high)


# python-obd command -> (vehicle state field, one step of the PID's encoding).
EVERY_PID: list[tuple[OBDCommand, str, float]] = [
    (obd.commands.ENGINE_LOAD, "engine_load_pct", 100 / 255),  # 04
    (obd.commands.COOLANT_TEMP, "coolant_c", 1.0),  # 05
    (obd.commands.INTAKE_PRESSURE, "map_kpa", 1.0),  # 0B
    (obd.commands.RPM, "rpm", 0.25),  # 0C
    (obd.commands.SPEED, "speed_kmh", 1.0),  # 0D
    (obd.commands.INTAKE_TEMP, "intake_c", 1.0),  # 0F
    (obd.commands.MAF, "maf_gps", 0.01),  # 10
    (obd.commands.THROTTLE_POS, "throttle_pct", 100 / 255),  # 11
    (obd.commands.RUN_TIME, "runtime_s", 1.0),  # 1F
    (obd.commands.FUEL_LEVEL, "fuel_level_pct", 100 / 255),  # 2F
    (obd.commands.DISTANCE_SINCE_DTC_CLEAR, "distance_since_clear_km", 1.0),  # 31
    (obd.commands.CONTROL_MODULE_VOLTAGE, "battery_v", 0.001),  # 42
    (obd.commands.AMBIANT_AIR_TEMP, "ambient_c", 1.0),  # 46
    (obd.commands.OIL_TEMP, "oil_c", 1.0),  # 5C
    (obd.commands.FUEL_RATE, "fuel_rate_lph", 0.05),  # 5E
    (ODOMETER, "odometer_km", 0.1),  # A6
    (obd.commands.ELM_VOLTAGE, "battery_v", 0.1),  # ATRV
]

SIX_FIELDS: dict[int, tuple[str, float, Callable[[bytes], float]]] = {
    0x0D: ("speed_kmh", 1.0, lambda b: b[0]),
    0x0C: ("rpm", 0.25, lambda b: (b[0] << 8 | b[1]) / 4),
    0x04: ("engine_load_pct", 100 / 255, lambda b: b[0] * 100 / 255),
    0x05: ("coolant_c", 1.0, lambda b: b[0] - 40),
    0x0F: ("intake_c", 1.0, lambda b: b[0] - 40),
    0x10: ("maf_gps", 0.01, lambda b: (b[0] << 8 | b[1]) / 100),
}


def _magnitude(value: Any) -> float:
    return float(getattr(value, "magnitude", value))


def test_python_obd_reads_every_pid_as_the_moving_model_has_it(tmp_path: Path) -> None:
    model = VehicleModel(parse_scenario(tomllib.loads(PULLING_AWAY), Path("pulling_away.toml")))
    # Python-obd's automatic protocol search waits at least 3 s: it is done after t = 600 s.
    live = LiveVehicle(model, 1.0, start_mono_s=time.monotonic() - 598.5)
    window = ModelWindow(live)
    with served(tmp_path, live) as (connection, server):
        assert connection.status() == obd.OBDStatus.CAR_CONNECTED
        assert connection.protocol_name() == "ISO 15765-4 (CAN 11/500)"
        assert live.now_s() > 600.0, "python-obd connected before the van pulled away"
        speeds: list[float] = []
        for _ in range(2):  # twice: the second round goes with python-obd's frame counts
            for command, field, lsb in EVERY_PID:
                if command.command.startswith(b"01") and command is not ODOMETER:
                    assert connection.supports(command), command.name  # from the bitmaps
                t0 = time.monotonic()
                response = connection.query(command, force=True)
                t1 = time.monotonic()
                assert not response.is_null(), command.name
                value = _magnitude(response.value)
                window.check(command.name, value, field, lsb, t0, t1)
                if command is obd.commands.SPEED:
                    speeds.append(value)
        assert speeds[-1] > speeds[0] > 0.0, speeds  # the values really moved

        # One request, six PIDs (the most one CAN frame carries), one multi-frame reply.
        t0 = time.monotonic()
        six = connection.query(SIX_PIDS, force=True).value
        t1 = time.monotonic()
        assert list(six) == [0x0D, 0x0C, 0x04, 0x05, 0x0F, 0x10]
        for pid, (field, lsb, decode) in SIX_FIELDS.items():
            window.check(f"{pid:02X}", decode(six[pid]), field, lsb, t0, t1)
        # Seven do not fit: the adapter answers "?" without asking the ECU.
        requests = server.elm.ecu_requests
        assert connection.query(SEVEN_PIDS, force=True).is_null()
        assert server.elm.ecu_requests == requests

        assert connection.query(obd.commands.VIN).value == model.scenario.vehicle.vin.encode()
        assert [code for code, _ in connection.query(obd.commands.GET_DTC).value] == ["P0301"]
        assert connection.query(obd.commands.GET_CURRENT_DTC).value == []
        connection.query(obd.commands.CLEAR_DTC, force=True)
        assert connection.query(obd.commands.GET_DTC).value == []


def test_python_obd_reads_a_multi_pid_request_in_one_reply(
    python_obd: tuple[obd.OBD, ELM327Server],
) -> None:
    connection, server = python_obd
    before = server.elm.ecu_requests
    values = connection.query(SPEED_AND_RPM, force=True).value
    assert values == {0x0D: bytes([57]), 0x0C: bytes([0x19, 0xC9])}
    assert server.elm.ecu_requests == before + 1


@pytest.mark.parametrize("python_obd", [("clone-v2.1", "6")], indirect=True)
def test_clone_refuses_multi_pid(python_obd: tuple[obd.OBD, ELM327Server]) -> None:
    connection, _server = python_obd
    assert connection.query(obd.commands.ELM_VERSION).value == "ELM327 v2.1"
    assert connection.query(obd.commands.SPEED).value.magnitude == 57.0
    assert list(connection.query(SPEED_AND_RPM, force=True).value) == [0x0D]


@pytest.mark.parametrize("python_obd", [("v1.5", "6")], indirect=True)
def test_ignition_off_gives_no_data_but_voltage(
    python_obd: tuple[obd.OBD, ELM327Server], van: FixedState
) -> None:
    connection, _server = python_obd
    van.update(ignition=False, battery_v=12.5)
    assert connection.query(obd.commands.RPM).is_null()
    assert connection.query(obd.commands.ELM_VOLTAGE).value.magnitude == 12.5
    van.update(ignition=True)
    assert connection.query(obd.commands.RPM).value.magnitude == 1650.25
