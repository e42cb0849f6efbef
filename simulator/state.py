"""Vehicle state: the simulated van at one instant, which every emulated device reads.

The vehicle model produces a ``VehicleState`` for any simulated time; the NMEA talker, the ELM327
emulator and the ignition line only read it. Nothing here imports ``agent`` or ``drivers``: the
simulator is an independent implementation that checks theirs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class VehicleState:
    t_s: float  # simulated seconds since the scenario started
    utc: dt.datetime  # simulated wall time (timezone-aware UTC)
    lat: float  # true position, degrees (the talker adds receiver noise on top)
    lon: float
    alt_m: float
    speed_kmh: float  # true speed over ground
    course_deg: float
    accel_mps2: float  # longitudinal acceleration, signed
    yaw_rate_dps: float  # heading change rate, degrees per second
    ignition: bool
    engine_running: bool
    rpm: float
    engine_load_pct: float
    throttle_pct: float  # absolute throttle position (PID 11); about 15 % closed, never 0
    coolant_c: float
    oil_c: float  # engine oil, lagging the coolant (PID 5C)
    intake_c: float
    ambient_c: float  # outside air (PID 46)
    maf_gps: float
    map_kpa: float
    fuel_level_pct: float
    fuel_rate_lph: float
    runtime_s: float  # seconds since engine start
    odometer_km: float
    distance_since_clear_km: float  # since the trouble codes were last cleared (PID 31)
    battery_v: float
    dtcs: tuple[str, ...]  # stored codes, e.g. ("P0301",)
    pending_dtcs: tuple[str, ...]
    vin: str
    gnss_fix: bool  # False in tunnels, during cold start and dropouts
    gnss_online: bool  # False while the receiver is unplugged
    obd_online: bool  # False while the adapter is unplugged


class StateSource(Protocol):
    """Anything that can tell the vehicle's state now (a live model, or a fixed state in tests)."""

    def state(self) -> VehicleState: ...


_RUNNING = VehicleState(
    t_s=0.0,
    utc=dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC),
    lat=52.0,
    lon=4.0,
    alt_m=0.0,
    speed_kmh=57.0,
    course_deg=0.0,
    accel_mps2=0.0,
    yaw_rate_dps=0.0,
    ignition=True,
    engine_running=True,
    rpm=1650.25,
    engine_load_pct=40.0,
    throttle_pct=24.0,
    coolant_c=88.0,
    oil_c=94.0,
    intake_c=30.0,
    ambient_c=18.0,
    maf_gps=12.34,
    map_kpa=65.0,
    fuel_level_pct=55.0,
    fuel_rate_lph=6.5,
    runtime_s=600.0,
    odometer_km=123456.7,
    distance_since_clear_km=1234.0,
    battery_v=14.1,
    dtcs=(),
    pending_dtcs=(),
    vin="WF0XXXTTGXKA12345",
    gnss_fix=True,
    gnss_online=True,
    obd_online=True,
)


def running_van(**changes: Any) -> VehicleState:
    """A warm van at a steady 57 km/h, with ``changes``: a fixed state for tests and benches."""
    return dataclasses.replace(_RUNNING, **changes)


class FixedState:
    """A state source that answers one state until a test changes it (from any thread)."""

    def __init__(self, state: VehicleState) -> None:
        self._lock = threading.Lock()
        self._state = state

    def state(self) -> VehicleState:
        with self._lock:
            return self._state

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._state = dataclasses.replace(self._state, **changes)
