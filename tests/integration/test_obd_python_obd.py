"""Unmodified python-obd against the emulated ELM327 over a real pseudo-terminal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import obd
import pytest
from obd import OBDCommand
from obd.protocols import ECU

from simulator.elm327 import ELM327Server
from simulator.state import FixedState, running_van

STATE = running_van(dtcs=('P0301',))




def _odometer(messages: list[object]) -> float:
    data = messages[0].data  # type: ignore[attr-defined]
    return int.from_bytes(bytes(data[2:6]), "big") / 10.0


# python-obd 0.7.3 has no PID A6; its documented extension point is a custom OBDCommand.
ODOMETER = OBDCommand("ODOMETER", "Odometer", b"01A6", 6, _odometer, ECU.ENGINE, True)


def _pids_seen(messages: list[object]) -> list[int]:
    data = bytes(messages[0].data)  # type: ignore[attr-defined]
    return [data[1], *([data[3]] if len(data) > 3 else [])]


SPEED_AND_RPM = OBDCommand(
    "SPEED_RPM", "Speed and RPM", b"010D0C", 0, _pids_seen, ECU.ENGINE, False
)


@pytest.fixture
def van() -> FixedState:
    return FixedState(STATE)


@pytest.fixture
def python_obd(
    tmp_path: Path, van: FixedState, request: pytest.FixtureRequest
) -> Iterator[tuple[obd.OBD, ELM327Server]]:
    variant, protocol = getattr(request, "param", ("v1.5", None))
    server = ELM327Server(van, tmp_path / "obd0", variant=variant, latency_s=0.01)
    server.start()
    # protocol=None runs python-obd's automatic search (three seconds of fixed waits);
    # "6" (CAN 11/500) skips it.
    connection = obd.OBD(str(server.path), baudrate=38400, protocol=protocol)
    try:
        yield connection, server
    finally:
        connection.close()
        server.stop()


def test_python_obd_connects_and_reads_every_pid(
    python_obd: tuple[obd.OBD, ELM327Server], van: FixedState
) -> None:
    connection, _server = python_obd
    assert connection.status() == obd.OBDStatus.CAR_CONNECTED
    assert connection.protocol_name() == "ISO 15765-4 (CAN 11/500)"
    c = obd.commands
    van.update(speed_kmh=83.0, rpm=2210.5, coolant_c=91.0)
    expected = {
        c.ENGINE_LOAD: 40.0,
        c.COOLANT_TEMP: 91.0,
        c.INTAKE_PRESSURE: 65.0,
        c.RPM: 2210.5,
        c.SPEED: 83.0,
        c.INTAKE_TEMP: 30.0,
        c.MAF: 12.34,
        c.THROTTLE_POS: 40.0,
        c.RUN_TIME: 600.0,
        c.FUEL_LEVEL: 55.0,
        c.DISTANCE_SINCE_DTC_CLEAR: 65535.0,
        c.CONTROL_MODULE_VOLTAGE: 14.1,
        c.AMBIANT_AIR_TEMP: 30.0,
        c.OIL_TEMP: 91.0,
        c.FUEL_RATE: 6.5,
        c.ELM_VOLTAGE: 14.1,
    }
    for command, value in expected.items():
        assert connection.supports(command) or command is c.ELM_VOLTAGE, command.name
        response = connection.query(command)
        assert not response.is_null(), command.name
        assert response.value.magnitude == pytest.approx(value, abs=0.25), command.name
    assert connection.query(ODOMETER, force=True).value == pytest.approx(123456.7)
    assert connection.query(c.VIN).value == bytearray(b"WF0XXXTTGXKA12345")
    assert [code for code, _ in connection.query(c.GET_DTC).value] == ["P0301"]
    assert connection.query(c.GET_CURRENT_DTC).value == []
    # A multi-PID request answers both PIDs in one reply.
    assert connection.query(SPEED_AND_RPM, force=True).value == [0x0D, 0x0C]


@pytest.mark.parametrize("python_obd", [("clone-v2.1", "6")], indirect=True)
def test_clone_refuses_multi_pid(python_obd: tuple[obd.OBD, ELM327Server]) -> None:
    connection, _server = python_obd
    assert connection.query(obd.commands.ELM_VERSION).value == "ELM327 v2.1"
    assert connection.query(obd.commands.SPEED).value.magnitude == 57.0
    assert connection.query(SPEED_AND_RPM, force=True).value == [0x0D]


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
