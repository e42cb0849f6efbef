"""Samples: the frozen values every driver emits and the agent consumes.

These are the only driver types that cross into ``agent/``. python-obd responses, pint quantities
and pynmea2 sentence objects never leave ``drivers/``. Units live in the field names. Every sample
carries ``ts_mono``: seconds on the injected monotonic clock at the moment the driver produced it
(scaled time in simulations and virtual time in replay); detectors use nothing else as time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class FixMode(IntEnum):
    """GSA fix mode: 1 no fix, 2 two-dimensional, 3 three-dimensional."""

    NONE = 1
    FIX_2D = 2
    FIX_3D = 3


class FixQuality(IntEnum):
    """GGA fix quality indicator."""

    INVALID = 0
    GPS = 1
    DGPS = 2
    PPS = 3
    RTK = 4
    FLOAT_RTK = 5
    ESTIMATED = 6
    MANUAL = 7
    SIMULATION = 8


@dataclass(frozen=True, slots=True)
class GNSSFix:
    """One epoch with a valid position fix (no-fix epochs are never emitted as a GNSSFix)."""

    ts_mono: float
    utc: dt.datetime  # timezone-aware UTC, from the receiver
    lat: float  # degrees, WGS84, north positive
    lon: float  # degrees, east positive
    alt_m: float | None
    speed_mps: float | None
    course_deg: float | None  # true course over ground, 0..360
    mode: FixMode
    quality: FixQuality | None
    sats: int | None  # satellites used in the solution
    hdop: float | None
    pdop: float | None = None
    sats_in_view: int | None = None


class LinkState(StrEnum):
    """State of a device link as a driver reports it."""

    UP = "up"  # device open and talking (GNSS: valid fixes; OBD: ECU answering)
    NO_FIX = "no_fix"  # GNSS: sentences flowing but no valid fix
    DOWN = "down"  # device gone, silent, or unusable


class Link(StrEnum):
    GNSS = "gnss"
    OBD = "obd"


@dataclass(frozen=True, slots=True)
class LinkSample:
    """A change of a device link's state, emitted on every transition (not periodically)."""

    ts_mono: float
    link: Link
    state: LinkState
    reason: str = ""  # human-readable: "device disappeared", "no NMEA for 5 s", ...


class FuelRateSource(StrEnum):
    PID_5E = "pid_5e"  # engine fuel rate reported by the ECU
    MAF = "maf"  # derived from mass air flow and the fuel's stoichiometric ratio and density
    SPEED_DENSITY = "speed_density"  # derived from MAP, intake temperature, RPM, displacement, VE


@dataclass(frozen=True, slots=True)
class OBDReading:
    """One poll round's engine values; a field is None when it was not read this round."""

    ts_mono: float
    speed_kmh: float | None = None
    rpm: float | None = None
    engine_load_pct: float | None = None
    coolant_c: float | None = None
    intake_c: float | None = None
    maf_gps: float | None = None
    map_kpa: float | None = None
    fuel_level_pct: float | None = None
    fuel_rate_lph: float | None = None
    fuel_rate_source: FuelRateSource | None = None
    runtime_s: float | None = None
    odometer_km: float | None = None
    voltage_v: float | None = None


@dataclass(frozen=True, slots=True)
class DTCSample:
    """The full set of trouble codes read at one moment (mode 03 stored, mode 07 pending)."""

    ts_mono: float
    stored: tuple[str, ...]
    pending: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VehicleInfo:
    """What the adapter told us about itself and the car, emitted once per (re)connection."""

    ts_mono: float
    adapter: str  # e.g. "ELM327 v1.5"
    protocol: str  # e.g. "ISO 15765-4 (CAN 11/500)"
    vin: str | None
    supported_pids: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("0C", "0D", ...)
    multi_pid: bool = False


@dataclass(frozen=True, slots=True)
class IgnitionSample:
    """The debounced ignition state, emitted on every change and once at start."""

    ts_mono: float
    on: bool
    source: str = "gpio"  # "gpio" | "rpm" | "voltage"


Sample = GNSSFix | LinkSample | OBDReading | DTCSample | VehicleInfo | IgnitionSample
