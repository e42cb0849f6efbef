"""Configuration: TOML files loaded into frozen, validated dataclasses.

Every section is a frozen dataclass whose fields carry their default, their bounds and a one-line
description in ``field(metadata=...)``. The loader walks those declarations, so one place states
what a key means, what it accepts and what it defaults to; ``docs/configuration.md`` and
``config/agent.example.toml`` describe the same keys. Unknown keys, wrong types and out-of-range
values raise :class:`ConfigError` naming the file, the dotted key and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.errors import ConfigError

T = TypeVar("T")


def _opt(
    default: Any,
    doc: str,
    *,
    min: float | None = None,  # noqa: A002 - reads well at the call sites
    max: float | None = None,  # noqa: A002
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
) -> Any:
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "pattern": pattern}
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return field(default=default, metadata=meta)


def _section(cls: type[T], doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass(frozen=True, slots=True)
class AgentSection:
    state_dir: str = _opt(
        "/var/lib/telematics-agent", "directory for the spool, sequence counter and status file"
    )
    log_level: str = _opt("info", "log level", choices=("debug", "info", "warning", "error"))
    time_scale: float = _opt(
        1.0, "run the clock this many times faster (simulations only)", min=0.001, max=1000.0
    )


@dataclass(frozen=True, slots=True)
class DeviceSection:
    id: str = _opt(
        "",
        "device id used in every topic and payload (letters, digits, '-', '_'; 1-64)",
        pattern=r"[A-Za-z0-9_-]{1,64}",
    )


@dataclass(frozen=True, slots=True)
class TLSSection:
    ca_file: str = _opt("", "CA bundle that signed the broker's certificate; empty = no TLS")
    cert_file: str = _opt("", "client certificate (PEM) for mutual TLS")
    key_file: str = _opt("", "client private key (PEM) for mutual TLS")
    insecure_skip_hostname: bool = _opt(False, "do not check the broker's hostname (tests only)")


@dataclass(frozen=True, slots=True)
class MQTTSection:
    host: str = _opt("localhost", "broker host name or address")
    port: int = _opt(1883, "broker port (8883 for TLS)", min=1, max=65535)
    prefix: str = _opt("fleet/v1", "topic prefix; topics are {prefix}/{device_id}/...")
    client_id: str = _opt("", "MQTT client id; empty = the device id")
    protocol: str = _opt(
        "auto", "MQTT protocol: 5, 3.1.1, or auto (5 then 3.1.1)", choices=("auto", "5", "3.1.1")
    )
    keepalive_s: int = _opt(60, "MQTT keepalive interval", min=5, max=3600)
    username: str = _opt("", "optional username")
    password_file: str = _opt("", "file holding the password (never put the password here)")
    max_inflight: int = _opt(100, "QoS 1 messages awaiting PUBACK at once", min=1, max=65535)
    backoff_min_s: float = _opt(1.0, "first reconnect delay", min=0.05, max=600.0)
    backoff_max_s: float = _opt(120.0, "longest reconnect delay", min=0.05, max=3600.0)
    live_min_interval_s: float = _opt(
        0.0,
        "publish the retained live position at most this often (0 = every record);"
        " every record still arrives in pos batches",
        min=0.0,
        max=3600.0,
    )
    tls: TLSSection = _section(TLSSection, "mutual TLS")


@dataclass(frozen=True, slots=True)
class GNSSSection:
    enabled: bool = _opt(True, "read a GNSS receiver")
    port: str = _opt(
        "/dev/gnss0", "serial port or pyserial URL (socket://host:port, a pseudo-terminal path)"
    )
    baud: int = _opt(9600, "serial speed; 0 = detect automatically", min=0, max=921600)
    checksum_policy: str = _opt(
        "reject",
        "sentences with a bad checksum: reject (count and skip) or accept",
        choices=("reject", "accept"),
    )
    missing_checksum: str = _opt(
        "accept",
        "sentences without a checksum: accept or reject",
        choices=("reject", "accept"),
    )
    set_system_clock: bool = _opt(
        False, "set the system clock from GNSS when it is unsynced (needs CAP_SYS_TIME)"
    )
    silence_timeout_s: float = _opt(
        5.0, "no bytes for this long = receiver lost", min=0.5, max=600.0
    )


@dataclass(frozen=True, slots=True)
class OBDSection:
    enabled: bool = _opt(True, "read an ELM327 OBD-II adapter")
    port: str = _opt("/dev/obd0", "serial port or pyserial URL of the adapter")
    baud: int = _opt(38400, "serial speed; 0 = detect automatically", min=0, max=2000000)
    fuel_type: str = _opt(
        "diesel", "fuel burned, for MAF-derived fuel rate", choices=("petrol", "diesel", "lpg")
    )
    displacement_l: float = _opt(
        2.0, "engine displacement, for speed-density fuel rate", min=0.1, max=20.0
    )
    volumetric_efficiency: float = _opt(
        0.85, "volumetric efficiency, for speed-density fuel rate", min=0.1, max=1.5
    )
    fast_hz: float = _opt(2.0, "poll rate of speed and RPM", min=0.01, max=20.0)
    medium_hz: float = _opt(
        1.0, "poll rate of fuel rate, MAF, MAP, load, intake temperature", min=0.01, max=20.0
    )
    slow_interval_s: float = _opt(
        10.0,
        "interval of fuel level, coolant, runtime, distance since codes cleared, odometer",
        min=0.5,
        max=3600.0,
    )
    dtc_interval_s: float = _opt(300.0, "interval of trouble-code reads", min=5.0, max=86400.0)
    voltage_interval_s: float = _opt(30.0, "interval of ATRV reads", min=1.0, max=3600.0)
    low_voltage_v: float = _opt(
        11.8, "stop querying the ECU below this battery voltage (engine off)", min=6.0, max=16.0
    )
    multi_pid: str = _opt(
        "auto", "multi-PID mode 01 requests on CAN", choices=("auto", "on", "off")
    )
    timeout_s: float = _opt(1.0, "one request's reply timeout", min=0.05, max=30.0)


@dataclass(frozen=True, slots=True)
class IgnitionSection:
    backend: str = _opt(
        "none",
        "ignition sense: none (use RPM/voltage fallback), simulated, rpigpio, gpiod",
        choices=("none", "simulated", "rpigpio", "gpiod"),
    )
    pin: int = _opt(17, "BCM GPIO number (rpigpio) or line offset (gpiod)", min=0, max=511)
    chip: str = _opt("/dev/gpiochip0", "GPIO chip (gpiod)")
    line_file: str = _opt("", "simulated backend: file holding the line level '0' or '1'")
    active_low: bool = _opt(False, "ignition on = low level")
    debounce_s: float = _opt(2.0, "level must hold this long to count", min=0.0, max=60.0)
    power_hold_pin: int = _opt(-1, "BCM GPIO that keeps the Pi powered; -1 = none", min=-1, max=511)
    power_hold_release_s: float = _opt(
        60.0,
        "after ignition off and a flushed spool, release power-hold after this",
        min=0.0,
        max=86400.0,
    )
    power_hold_max_s: float = _opt(
        1800.0,
        "after ignition off, release power-hold after this even if the spool has not drained"
        " (no broker); the spool keeps its entries on disk; 0 = no bound",
        min=0.0,
        max=604800.0,
    )
    led_pin: int = _opt(-1, "BCM GPIO of a status LED; -1 = none", min=-1, max=511)


@dataclass(frozen=True, slots=True)
class SpoolSection:
    flush_interval_s: float = _opt(
        10.0,
        "positions wait in memory at most this long before one commit"
        " (the bound on loss at a power cut)",
        min=0.0,
        max=600.0,
    )
    max_batch_records: int = _opt(100, "positions per spool entry / MQTT message", min=1, max=10000)
    max_bytes: int = _opt(
        64 * 1024 * 1024, "spool size bound; oldest position batches are evicted first", min=65536
    )
    encoding: str = _opt(
        "json",
        "position batch encoding: json or zlib (compressed columns)",
        choices=("json", "zlib"),
    )
    thin_keep_every: int = _opt(
        0,
        "when full, first thin the oldest position batches to every Nth record;"
        " 0 = evict whole batches only",
        min=0,
        max=100,
    )


@dataclass(frozen=True, slots=True)
class ReportSection:
    moving_interval_s: float = _opt(10.0, "moving: report at least this often", min=0.0, max=3600.0)
    moving_distance_m: float = _opt(
        100.0, "moving: report after this distance", min=0.0, max=100000.0
    )
    heading_change_deg: float = _opt(
        15.0, "moving: report on this heading change", min=0.0, max=180.0
    )
    stopped_interval_s: float = _opt(300.0, "stopped: report this often", min=0.0, max=86400.0)
    min_interval_s: float = _opt(
        1.0, "never report more often than this; 0 = report every fix", min=0.0, max=3600.0
    )
    engine_interval_s: float = _opt(
        300.0,
        "an OBD engine summary (fuel used, idle time, averages, newest levels) on the engine"
        " topic per this many seconds of readings, and at ignition off; 0 = none",
        min=0.0,
        max=86400.0,
    )


_TABLE = "ARCHITECTURE.md event table"


@dataclass(frozen=True, slots=True)
class MotionDetectSection:
    obd_speed_max_age_s: float = _opt(
        2.5,
        "OBD speed older than this is stale; GNSS speed is used instead (fusion)",
        min=0.1,
        max=60.0,
    )
    gnss_max_hdop: float = _opt(
        5.0,
        "GNSS speed and position are used only at or below this HDOP (fix-quality gate)",
        min=0.5,
        max=99.0,
    )
    use_estimated_fixes: bool = _opt(
        False,
        "let dead-reckoning fixes (GGA quality 6, RMC mode E) drive events; they are reported"
        " as positions (marked \"fix\": \"estimated\") either way",
    )
    max_jump_m: float = _opt(
        30.0,
        "a fix further than speed*dt plus this from the last one is a multipath jump and rejected",
        min=1.0,
        max=10000.0,
    )
    stationary_obd_kmh: float = _opt(
        2.0, f"stationary below this OBD speed ({_TABLE}, idle)", min=0.0, max=50.0
    )
    stationary_gnss_kmh: float = _opt(
        5.0, f"stationary below this GNSS speed ({_TABLE}, idle)", min=0.0, max=50.0
    )
    max_integration_gap_s: float = _opt(
        5.0,
        "distance and fuel are not integrated across sample gaps longer than this",
        min=0.5,
        max=600.0,
    )
    gnss_speed_max_age_s: float = _opt(
        2.5,
        "GNSS speed older than this is stale: without fresh OBD speed, no speed is known",
        min=0.1,
        max=60.0,
    )
    rpm_max_age_s: float = _opt(
        5.0,
        "RPM older than this no longer says whether the engine runs (the ignition decides)",
        min=0.1,
        max=600.0,
    )
    jump_speed_factor: float = _opt(
        1.5,
        "jump gate while moving: a fix may be up to speed*dt times this plus max_jump_m away",
        min=1.0,
        max=10.0,
    )
    reanchor_rejects: int = _opt(
        5,
        "while moving, this many rejected fixes in a row re-anchor the position on the newest"
        " (and end confirmed GNSS-only movement)",
        min=1,
        max=1000,
    )
    reanchor_gap_s: float = _opt(
        10.0,
        "while moving, a fix this long after the last accepted one re-anchors the position;"
        " without any speed this long, a standstill's place is given up",
        min=0.5,
        max=3600.0,
    )
    gnss_confirm_s: float = _opt(
        3.0,
        "without OBD speed, GNSS movement counts only after fixes agreeing with their Doppler"
        " speed and course, all above stationary_gnss_kmh, span this long",
        min=0.0,
        max=60.0,
    )
    gnss_confirm_m: float = _opt(
        10.0,
        "... and cover at least this distance (twice gnss_tolerance_m: more than noise)",
        min=0.0,
        max=1000.0,
    )
    gnss_tolerance_m: float = _opt(
        5.0,
        "displacement between fixes must match the distance their Doppler speeds integrate to"
        " (and, over the confirmation, dead reckoning) within this plus gnss_tolerance_pct",
        min=0.1,
        max=1000.0,
    )
    gnss_tolerance_pct: float = _opt(
        30.0,
        "... plus this share of the integrated distance (chords of curves, speed noise)",
        min=0.0,
        max=100.0,
    )
    gnss_course_tolerance_deg: float = _opt(
        45.0,
        "the GNSS course may turn at most this much from one fix to the next, and a step longer"
        " than the noise must point within this of it",
        min=1.0,
        max=180.0,
    )
    max_accel_mps2: float = _opt(
        10.0,
        "no van changes speed faster than this (1 g): GNSS speed changes beyond it are multipath",
        min=1.0,
        max=100.0,
    )


@dataclass(frozen=True, slots=True)
class IgnitionDetectSection:
    rpm_fallback: bool = _opt(True, f"without GPIO ignition samples, RPM > 0 means on ({_TABLE})")
    voltage_on_v: float = _opt(
        13.2,
        f"without GPIO or RPM, adapter voltage above this means on ({_TABLE})",
        min=6.0,
        max=16.0,
    )
    voltage_on_s: float = _opt(
        3.0, f"the voltage must hold this long ({_TABLE})", min=0.0, max=600.0
    )


@dataclass(frozen=True, slots=True)
class TripDetectSection:
    start_speed_kmh: float = _opt(
        5.0, f"trip starts above this speed with ignition on ({_TABLE})", min=0.0, max=100.0
    )
    start_distance_m: float = _opt(
        200.0, f"or after this distance moved with ignition on ({_TABLE})", min=0.0, max=100000.0
    )
    end_ignition_off_s: float = _opt(
        60.0,
        f"trip ends after ignition off this long; shorter offs do not split ({_TABLE})",
        min=0.0,
        max=86400.0,
    )
    min_stop_s: float = _opt(
        300.0,
        f"a trip ends only within a standstill this long; shorter stops do not split ({_TABLE})",
        min=0.0,
        max=86400.0,
    )
    start_confirm_s: float = _opt(
        2.0,
        "the start speed must hold this long: one stray reading must not open a trip",
        min=0.0,
        max=600.0,
    )


@dataclass(frozen=True, slots=True)
class IdleDetectSection:
    min_s: float = _opt(
        120.0, f"engine running and stationary this long is idling ({_TABLE})", min=1.0, max=86400.0
    )
    end_moving_s: float = _opt(
        10.0, f"idling ends after moving this long ({_TABLE})", min=0.0, max=600.0
    )


@dataclass(frozen=True, slots=True)
class HarshDetectSection:
    accel_mps2: float = _opt(
        2.5, f"harsh acceleration at or above this ({_TABLE})", min=0.5, max=20.0
    )
    brake_mps2: float = _opt(
        -3.0, f"harsh braking at or below this ({_TABLE})", min=-20.0, max=-0.5
    )
    brake_bands_mps2: tuple[float, ...] = _opt(
        (-3.0, -4.0, -5.0), f"braking severity bands 1/2/3: peak at or below each ({_TABLE})"
    )
    min_duration_s: float = _opt(
        0.5, f"the acceleration must hold this long ({_TABLE})", min=0.0, max=10.0
    )
    min_speed_kmh: float = _opt(
        10.0, f"harsh accel/brake only at or above this speed ({_TABLE})", min=0.0, max=200.0
    )
    turn_mps2: float = _opt(
        3.0, f"harsh turn: lateral v*dheading/dt at or above this ({_TABLE})", min=0.5, max=20.0
    )
    turn_min_speed_kmh: float = _opt(
        30.0, f"harsh turns only at or above this speed ({_TABLE})", min=0.0, max=200.0
    )
    turn_max_hdop: float = _opt(
        2.0, f"harsh turns only from fixes at or below this HDOP ({_TABLE})", min=0.5, max=99.0
    )
    accel_window_s: float = _opt(
        1.0,
        "acceleration = least-squares slope of speed over this window (smooths OBD's 1 km/h steps)",
        min=0.05,
        max=10.0,
    )
    turn_min_span_s: float = _opt(
        0.9,
        "heading rate is measured over fixes at least this far apart (and accel_window_s):"
        " at 10 Hz a degree of course noise per epoch would read as a 0.17 rad/s yaw rate",
        min=0.05,
        max=10.0,
    )
    evidence_before_s: float = _opt(
        5.0, "evidence window before a driving event", min=0.0, max=60.0
    )
    evidence_after_s: float = _opt(3.0, "evidence window after a driving event", min=0.0, max=60.0)


@dataclass(frozen=True, slots=True)
class SpeedingDetectSection:
    limit_kmh: float = _opt(
        100.0, "global speed limit; geofences may set lower or higher ones", min=1.0, max=300.0
    )
    min_s: float = _opt(
        10.0, f"above the limit this long is speeding ({_TABLE})", min=0.0, max=3600.0
    )
    hysteresis_kmh: float = _opt(
        5.0, f"speeding ends below limit minus this ({_TABLE})", min=0.0, max=100.0
    )


@dataclass(frozen=True, slots=True)
class GeofenceDetectSection:
    confirm_fixes: int = _opt(
        3, f"consecutive fixes on the other side to enter/exit ({_TABLE})", min=1, max=100
    )
    confirm_s: float = _opt(
        2.0,
        "... spanning at least this long (3 fixes at 1 Hz span 2 s; at 10 Hz 3 fixes are 0.2 s"
        " of receiver noise)",
        min=0.0,
        max=600.0,
    )
    max_segment_s: float = _opt(
        5.0,
        "fixes further apart than this are not joined into a segment to check",
        min=0.1,
        max=600.0,
    )


@dataclass(frozen=True, slots=True)
class StopDetectSection:
    min_s: float = _opt(
        180.0, f"stationary this long is a delivery stop ({_TABLE})", min=1.0, max=86400.0
    )
    end_moving_s: float = _opt(
        3.0, "a stop ends after moving this long (ignores creeping)", min=0.0, max=600.0
    )


@dataclass(frozen=True, slots=True)
class LinkDetectSection:
    lost_s: float = _opt(
        10.0, f"link or fix lost this long is reported ({_TABLE})", min=0.0, max=3600.0
    )


@dataclass(frozen=True, slots=True)
class SupplyDetectSection:
    low_fuel_pct: float = _opt(10.0, f"fuel level below this is low ({_TABLE})", min=0.0, max=100.0)
    low_fuel_confirm_s: float = _opt(
        20.0, "fuel level must stay low this long (tank sloshing)", min=0.0, max=3600.0
    )
    low_fuel_rearm_pct: float = _opt(
        15.0, "low fuel re-arms above this level (refuelled)", min=0.0, max=100.0
    )
    low_battery_v: float = _opt(
        12.3, f"adapter voltage at or below this with engine off ({_TABLE})", min=6.0, max=16.0
    )
    low_battery_s: float = _opt(
        180.0, f"for this long is low battery ({_TABLE})", min=0.0, max=86400.0
    )
    low_battery_rearm_v: float = _opt(
        12.6, "low battery re-arms above this voltage or on engine start", min=6.0, max=16.0
    )


@dataclass(frozen=True, slots=True)
class DetectSection:
    geofences_file: str = _opt("", "GeoJSON file of geofences (circles and polygons); empty = none")
    motion: MotionDetectSection = _section(
        MotionDetectSection, "speed fusion and fix-quality gates"
    )
    ignition: IgnitionDetectSection = _section(IgnitionDetectSection, "ignition_on / ignition_off")
    trip: TripDetectSection = _section(TripDetectSection, "trip_start / trip_end")
    idle: IdleDetectSection = _section(IdleDetectSection, "idle_start / idle_end")
    harsh: HarshDetectSection = _section(
        HarshDetectSection, "harsh_accel / harsh_brake / harsh_turn"
    )
    speeding: SpeedingDetectSection = _section(
        SpeedingDetectSection, "speeding_start / speeding_end"
    )
    geofence: GeofenceDetectSection = _section(
        GeofenceDetectSection, "geofence_enter / geofence_exit"
    )
    stop: StopDetectSection = _section(StopDetectSection, "stop_start / stop_end")
    link: LinkDetectSection = _section(LinkDetectSection, "gnss_lost / obd_lost and regained")
    supply: SupplyDetectSection = _section(SupplyDetectSection, "low_fuel / low_battery")


@dataclass(frozen=True, slots=True)
class HealthSection:
    interval_s: float = _opt(300.0, "publish a health record this often", min=5.0, max=86400.0)
    confirm_s: float = _opt(
        30.0,
        "after a remote set_config the agent must stay healthy this long, else it is rolled back",
        min=0.5,
        max=3600.0,
    )


@dataclass(frozen=True, slots=True)
class Config:
    agent: AgentSection = _section(AgentSection, "process")
    device: DeviceSection = _section(DeviceSection, "identity")
    mqtt: MQTTSection = _section(MQTTSection, "broker")
    gnss: GNSSSection = _section(GNSSSection, "GNSS receiver")
    obd: OBDSection = _section(OBDSection, "OBD-II adapter")
    ignition: IgnitionSection = _section(IgnitionSection, "ignition sense and GPIO")
    spool: SpoolSection = _section(SpoolSection, "store-and-forward spool")
    report: ReportSection = _section(ReportSection, "position reporting")
    health: HealthSection = _section(HealthSection, "health records")
    detect: DetectSection = _section(DetectSection, "event detection")
    source: str = field(default="", compare=False, metadata={"internal": True})

    def digest(self) -> str:
        """A short stable hash of the effective configuration (reported in state and health)."""
        data = json.dumps(to_dict(self), sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:12]


def load(path: str | Path) -> Config:
    """Read, parse and validate a configuration file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a configuration file") from None
    except PermissionError:
        raise ConfigError(f"{p}: cannot read the configuration file (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    return loads(text, source=str(p))


def loads(text: str, *, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except ValueError as exc:
        # tomllib hands decimal integers to int(), which refuses more than 4300 digits
        # (CVE-2020-10735) with a plain ValueError rather than a TOMLDecodeError. Its advice
        # after the colon (sys.set_int_max_str_digits) means nothing to a technician.
        reason = str(exc).split(":", 1)[0]
        raise ConfigError(f"{source}: not valid TOML: {reason}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: "a = [[[[..." a thousand
        # deep exhausts the stack.
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None
    cfg = from_dict(data, source=source)
    if not cfg.device.id:
        raise ConfigError(f"{source}: key 'device.id': required, a device id such as 'van-0042'")
    return cfg


def from_dict(data: Mapping[str, Any], *, source: str = "<config>") -> Config:
    cfg = _build(Config, data, source, "")
    return dataclasses.replace(cfg, source=source)


def replace_keys(cfg: Config, changes: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted keys changed, validated as if read from the file."""
    data = to_dict(cfg)
    for dotted, value in changes.items():
        node: dict[str, Any] = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"{cfg.source}: key {dotted!r}: no such section")
            node = child
        if parts[-1] not in node:
            raise ConfigError(f"{cfg.source}: key {dotted!r}: unknown key")
        node[parts[-1]] = value
    new = from_dict(data, source=cfg.source)
    if not new.device.id:
        raise ConfigError(f"{cfg.source}: key 'device.id': required")
    return new


def to_dict(obj: Any) -> dict[str, Any]:
    """The configuration as plain TOML-compatible data (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def describe(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every key as (dotted name, default, description), for documentation and tests."""
    rows: list[tuple[str, Any, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{prefix}{f.name}."))
        else:
            rows.append((prefix + f.name, f.default, f.metadata.get("doc", "")))
    return rows


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
# TOML integers are 64-bit ("an integer that cannot be represented losslessly must be an
# error"); tomllib does not check, and a 5000-digit hex literal would overflow float() and
# could not even be printed in the error message (int-to-str is capped at 4300 digits).
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _build(cls: type[T], data: Any, source: str, prefix: str) -> T:
    where = prefix.rstrip(".") or "(top level)"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: key {where!r}: expected a table, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    known = {f.name: f for f in fields if not f.metadata.get("internal")}
    unknown = sorted(set(data) - set(known))
    if unknown:
        key = prefix + unknown[0]
        hint = _close_match(unknown[0], list(known))
        raise ConfigError(f"{source}: key {key!r}: unknown key{hint}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        key = prefix + name
        tp = hints[name]
        value = data[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, source, key + ".")
        else:
            kwargs[name] = _check(value, tp, f.metadata, source, key)
    return cls(**kwargs)


def _check(value: Any, tp: Any, meta: Mapping[str, Any], source: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key {key!r}: expected a list, got {_kind(value)}")
        return tuple(_check(v, item_tp, {}, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported config type {tp}")  # pragma: no cover - declaration bug
    expected = _TYPE_WORDS[tp]
    ok = (
        (tp is bool and isinstance(value, bool))
        or (tp is int and isinstance(value, int) and not isinstance(value, bool))
        or (tp is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (tp is str and isinstance(value, str))
    )
    if not ok:
        raise ConfigError(f"{source}: key {key!r}: expected {expected}, got {_kind(value)}")
    if tp in (int, float) and isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        raise ConfigError(f"{source}: key {key!r}: expected {expected}, got {_kind(value)}")
    if tp is float:
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{source}: key {key!r}: expected a finite number, got {value}")
    lo, hi = meta.get("min"), meta.get("max")
    if tp in (int, float) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        span = f"from {lo} to {hi}" if lo is not None and hi is not None else (
            f"at least {lo}" if lo is not None else f"at most {hi}"
        )
        raise ConfigError(f"{source}: key {key!r}: expected {expected} {span}, got {value}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(
            f"{source}: key {key!r}: expected one of {', '.join(map(repr, choices))}, got {value!r}"
        )
    pattern = meta.get("pattern")
    if pattern and value and not re.fullmatch(pattern, value):
        raise ConfigError(f"{source}: key {key!r}: expected {meta.get('doc')}, got {value!r}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            return "an integer beyond 64 bits"
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__


def _close_match(word: str, options: list[str]) -> str:
    import difflib

    best = difflib.get_close_matches(word, options, n=1)
    if best:
        return f" (did you mean {best[0]!r}?)"
    return f" (known keys: {', '.join(sorted(options))})"
