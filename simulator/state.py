"""Vehicle state: the simulated van at one instant, which every emulated device reads.

The vehicle model produces a ``VehicleState`` for any simulated time; the NMEA talker, the ELM327
emulator and the ignition line only read it. Nothing here imports ``agent`` or ``drivers``: the
simulator is an independent implementation that checks theirs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


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
    coolant_c: float
    intake_c: float
    maf_gps: float
    map_kpa: float
    fuel_level_pct: float
    fuel_rate_lph: float
    runtime_s: float  # seconds since engine start
    odometer_km: float
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
