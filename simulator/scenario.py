"""Scenario: a TOML description of one simulated working day (route, plan, faults), validated.

Every error names the file and the key (``urban.toml: plan[3].speed_kmh: must be > 0``), so a
technician writing a scenario by hand can fix it without reading code. Unknown keys are errors:
a misspelt ``dwell_s`` must not silently become "use the default".
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

BUNDLED_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


class StepKind(StrEnum):
    PARK = "park"  # ignition off, engine off, stationary
    IDLE = "idle"  # ignition on, engine running, stationary
    DRIVE = "drive"  # along the route; starts the engine first if it is off


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    duration_s: float = 0.0  # park / idle
    distance_m: float | None = None  # drive: None = to the end of the route
    speed_kmh: float = 40.0  # drive: cruise speed
    end_speed_kmh: float = 0.0  # drive: speed at the end of the step
    accel_mps2: float = 1.2  # drive: acceleration limit
    decel_mps2: float = 1.8  # drive: braking limit (positive number)
    lateral_mps2: float = 1.8  # drive: lateral acceleration the driver accepts in corners


@dataclass(frozen=True, slots=True)
class Interval:
    t_s: float
    duration_s: float

    @property
    def end_s(self) -> float:
        return self.t_s + self.duration_s


@dataclass(frozen=True, slots=True)
class Burst:
    """A fault injected once at ``t_s``: ``count`` garbage bytes or corrupted sentences."""

    t_s: float
    count: int


@dataclass(frozen=True, slots=True)
class DTCChange:
    t_s: float
    set_codes: tuple[str, ...] = ()
    clear_codes: tuple[str, ...] = ()
    clear_all: bool = False
    pending: bool = False  # True: a pending code (mode 07), not a stored one (mode 03)


@dataclass(frozen=True, slots=True)
class Vehicle:
    vin: str = "WF0EXXTTGEMA12345"
    fuel_level_pct: float = 60.0
    fuel_tank_l: float = 80.0
    odometer_km: float = 48210.0
    battery_v: float = 12.45  # resting voltage with the engine off at the start
    battery_drain_v_per_h: float = 0.01  # while the engine is off
    ambient_c: float = 12.0
    coolant_c: float | None = None  # None: starts cold, at ambient


@dataclass(frozen=True, slots=True)
class GNSSFaults:
    cold_start_s: float = 0.0  # no fix for this long after t = 0
    outages: tuple[Interval, ...] = ()  # fix lost (tunnels), receiver still talks
    unplug: tuple[Interval, ...] = ()  # receiver disappears
    garbage: tuple[Burst, ...] = ()  # random bytes between sentences
    bad_checksums: tuple[Burst, ...] = ()  # sentences with a wrong checksum
    noise_scale: float = 1.0  # receiver error, multipath and speed noise; 0 = a perfect receiver


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    path: Path
    start_utc: dt.datetime
    waypoints: tuple[tuple[float, float, float], ...]  # (lat, lon, alt_m)
    plan: tuple[Step, ...]
    description: str = ""
    seed: int = 1
    speed_limit_kmh: float = 100.0
    corner_radius_m: float = 20.0
    geofences: Mapping[str, Any] | None = None  # a GeoJSON FeatureCollection
    vehicle: Vehicle = field(default_factory=Vehicle)
    gnss: GNSSFaults = field(default_factory=GNSSFaults)
    obd_unplug: tuple[Interval, ...] = ()
    dtcs: tuple[DTCChange, ...] = ()


class _Reader:
    """Typed access to one TOML table that remembers where it is, for error messages."""

    def __init__(self, file: Path, where: str, table: Mapping[str, Any]) -> None:
        self.file = file
        self.where = where
        self.table = table
        self.used: set[str] = set()

    def error(self, key: str, problem: str) -> ScenarioError:
        name = f"{self.where}.{key}" if self.where else key
        return ScenarioError(f"{self.file}: {name}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> Any:
        self.used.add(key)
        return self.table[key]

    def number(
        self,
        key: str,
        default: float | None = None,
        *,
        low: float | None = None,
        high: float | None = None,
        positive: bool = False,
    ) -> float:
        if key not in self.table:
            if default is None:
                raise self.error(key, "is required")
            return default
        value = self.raw(key)
        # bool is an int in Python; `speed_kmh = true` is a mistake, not 1 km/h.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, got {value!r}")
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise self.error(key, "must be finite")
        if positive and number <= 0:
            raise self.error(key, f"must be > 0, got {number:g}")
        if low is not None and number < low:
            raise self.error(key, f"must be >= {low:g}, got {number:g}")
        if high is not None and number > high:
            raise self.error(key, f"must be <= {high:g}, got {number:g}")
        return number

    def integer(self, key: str, default: int, *, low: int = 0) -> int:
        if key not in self.table:
            return default
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        if value < low:
            raise self.error(key, f"must be >= {low}, got {value}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        if key not in self.table:
            if default is None:
                raise self.error(key, "is required")
            return default
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {value!r}")
        return value

    def table_list(self, key: str) -> list[_Reader]:
        if key not in self.table:
            return []
        value = self.raw(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, "must be an array of tables")
        prefix = f"{self.where}.{key}" if self.where else key
        return [_Reader(self.file, f"{prefix}[{i}]", v) for i, v in enumerate(value)]

    def sub(self, key: str) -> _Reader:
        value = self.raw(key) if key in self.table else {}
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        prefix = f"{self.where}.{key}" if self.where else key
        return _Reader(self.file, prefix, value)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt?)")


def resolve_path(name_or_path: str | Path) -> Path:
    """A scenario path, or the bare name of a bundled scenario (``urban_delivery``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = BUNDLED_DIR / f"{path.name.removesuffix('.toml')}.toml"
    if len(path.parts) == 1 and bundled.exists():
        return bundled
    raise ScenarioError(f"{path}: no such scenario file (bundled: {', '.join(bundled_names())})")


def bundled_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Read and validate a scenario; raises ``ScenarioError`` naming the file and the key."""
    path = resolve_path(name_or_path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse_scenario(document, path)


def parse_scenario(document: Mapping[str, Any], path: Path) -> Scenario:
    top = _Reader(path, "", document)
    name = top.string("name", path.stem)
    description = top.string("description", "")
    start_utc = _parse_utc(top, "start_utc")
    seed = top.integer("seed", 1)
    speed_limit = top.number("speed_limit_kmh", 100.0, positive=True)
    geofences = _read_geofences(top, path) if top.has("geofences") else None

    route = top.sub("route")
    corner_radius = route.number("corner_radius_m", 20.0, low=1.0, high=2000.0)
    waypoints = _read_route(route, path)
    route.finish()

    vehicle = _read_vehicle(top.sub("vehicle"))
    gnss = _read_gnss(top.sub("gnss"))
    obd = top.sub("obd")
    obd_unplug = _read_intervals(obd, "unplug")
    obd.finish()
    dtcs = tuple(_read_dtc(r) for r in top.table_list("dtc"))
    plan = tuple(_read_step(r) for r in top.table_list("plan"))
    if not plan:
        raise top.error("plan", "needs at least one [[plan]] step")
    top.finish()
    return Scenario(
        name=name,
        path=path,
        start_utc=start_utc,
        waypoints=waypoints,
        plan=plan,
        description=description,
        seed=seed,
        speed_limit_kmh=speed_limit,
        corner_radius_m=corner_radius,
        geofences=geofences,
        vehicle=vehicle,
        gnss=gnss,
        obd_unplug=obd_unplug,
        dtcs=dtcs,
    )


def _parse_utc(reader: _Reader, key: str) -> dt.datetime:
    value = reader.raw(key) if reader.has(key) else "2026-03-02T07:00:00Z"
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise reader.error(key, f"not an ISO 8601 time: {value!r}") from None
    else:
        raise reader.error(key, f"must be an ISO 8601 UTC time, got {value!r}")
    if parsed.tzinfo is None:
        raise reader.error(key, "needs a time zone (end it with Z for UTC)")
    return parsed.astimezone(dt.UTC)


def _read_route(route: _Reader, path: Path) -> tuple[tuple[float, float, float], ...]:
    if route.has("waypoints") == route.has("geojson"):
        raise route.error("waypoints", "give exactly one of route.waypoints or route.geojson")
    points: list[Any]
    if route.has("waypoints"):
        points = route.raw("waypoints")
        key = "waypoints"
        lon_first = False
    else:
        key = "geojson"
        file = path.parent / route.string("geojson")
        geometry = _load_json(route, key, file)
        if isinstance(geometry, dict) and geometry.get("type") == "FeatureCollection":
            features = geometry.get("features") or [{}]
            geometry = features[0].get("geometry", {}) if isinstance(features[0], dict) else {}
        if isinstance(geometry, dict) and geometry.get("type") == "Feature":
            geometry = geometry.get("geometry", {})
        if not isinstance(geometry, dict) or geometry.get("type") != "LineString":
            raise route.error(key, f"{file.name} must hold a GeoJSON LineString")
        points = geometry.get("coordinates", [])
        lon_first = True  # GeoJSON order is [lon, lat(, alt)]
    if not isinstance(points, list) or len(points) < 2:
        raise route.error(key, "needs at least two points")
    result: list[tuple[float, float, float]] = []
    for i, point in enumerate(points):
        ok = (
            isinstance(point, list)
            and len(point) in (2, 3)
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in point)
        )
        if not ok:
            raise route.error(
                f"{key}[{i}]", f"must be [lat, lon] or [lat, lon, alt_m], got {point!r}"
            )
        a, b = float(point[0]), float(point[1])
        lat, lon = (b, a) if lon_first else (a, b)
        if not (-85.0 <= lat <= 85.0 and -180.0 <= lon <= 180.0):
            raise route.error(f"{key}[{i}]", f"lat/lon out of range: {point!r}")
        alt = float(point[2]) if len(point) == 3 else 50.0
        result.append((lat, lon, alt))
    return tuple(result)


def _load_json(reader: _Reader, key: str, file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise reader.error(key, f"cannot read {file}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise reader.error(key, f"{file.name} is not valid JSON: {exc}") from None


def _read_geofences(top: _Reader, path: Path) -> Mapping[str, Any]:
    file = path.parent / top.string("geofences")
    document = _load_json(top, "geofences", file)
    problem = geofence_problem(document)
    if problem:
        raise top.error("geofences", f"{file.name}: {problem}")
    assert isinstance(document, dict)
    return document


def geofence_problem(document: Any) -> str | None:
    """Why ``document`` is not a valid geofence FeatureCollection, or None if it is."""
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        return "must be a GeoJSON FeatureCollection"
    features = document.get("features")
    if not isinstance(features, list):
        return "features must be a list"
    for i, feature in enumerate(features):
        props = feature.get("properties") if isinstance(feature, dict) else None
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("id"), str):
            return f"features[{i}].properties.id must be a string"
        if not isinstance(geometry, dict):
            return f"features[{i}].geometry is missing"
        limit = props.get("speed_limit_kmh")
        if limit is not None and (not isinstance(limit, int | float) or limit <= 0):
            return f"features[{i}].properties.speed_limit_kmh must be a positive number"
        kind = geometry.get("type")
        coordinates = geometry.get("coordinates")
        if kind == "Point":
            radius = props.get("radius_m")
            if not isinstance(radius, int | float) or isinstance(radius, bool) or radius <= 0:
                return f"features[{i}]: a Point geofence needs properties.radius_m > 0"
            if not _is_position(coordinates):
                return f"features[{i}]: Point coordinates must be [lon, lat]"
        elif kind == "Polygon":
            ring = coordinates[0] if isinstance(coordinates, list) and coordinates else None
            if not isinstance(ring, list) or len(ring) < 4:
                return f"features[{i}]: a Polygon needs a ring of at least 4 positions"
            if not all(_is_position(p) for p in ring):
                return f"features[{i}]: Polygon positions must be [lon, lat]"
        else:
            return f"features[{i}]: geometry must be Point (circle) or Polygon, got {kind!r}"
    return None


def _is_position(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
        and -180.0 <= value[0] <= 180.0
        and -90.0 <= value[1] <= 90.0
    )


def _read_vehicle(reader: _Reader) -> Vehicle:
    base = Vehicle()
    coolant = (
        reader.number("coolant_c", 0.0, low=-40, high=120) if reader.has("coolant_c") else None
    )
    vin = reader.string("vin", base.vin)
    if len(vin) != 17 or not vin.isalnum() or any(c in vin.upper() for c in "IOQ"):
        raise reader.error(
            "vin", f"must be 17 characters, letters and digits without I, O, Q: {vin!r}"
        )
    vehicle = Vehicle(
        vin=vin.upper(),
        fuel_level_pct=reader.number("fuel_level_pct", base.fuel_level_pct, low=0, high=100),
        fuel_tank_l=reader.number("fuel_tank_l", base.fuel_tank_l, positive=True),
        odometer_km=reader.number("odometer_km", base.odometer_km, low=0),
        battery_v=reader.number("battery_v", base.battery_v, low=9.0, high=13.0),
        battery_drain_v_per_h=reader.number(
            "battery_drain_v_per_h", base.battery_drain_v_per_h, low=0, high=5
        ),
        ambient_c=reader.number("ambient_c", base.ambient_c, low=-40, high=50),
        coolant_c=coolant,
    )
    reader.finish()
    return vehicle


def _read_intervals(reader: _Reader, key: str) -> tuple[Interval, ...]:
    result = []
    for item in reader.table_list(key):
        result.append(Interval(item.number("t_s", low=0), item.number("duration_s", positive=True)))
        item.finish()
    return tuple(sorted(result, key=lambda i: i.t_s))


def _read_bursts(reader: _Reader, key: str, count_key: str) -> tuple[Burst, ...]:
    result = []
    for item in reader.table_list(key):
        result.append(Burst(item.number("t_s", low=0), item.integer(count_key, 1, low=1)))
        item.finish()
    return tuple(sorted(result, key=lambda b: b.t_s))


def _read_gnss(reader: _Reader) -> GNSSFaults:
    gnss = GNSSFaults(
        cold_start_s=reader.number("cold_start_s", 0.0, low=0),
        outages=_read_intervals(reader, "outages"),
        unplug=_read_intervals(reader, "unplug"),
        garbage=_read_bursts(reader, "garbage", "bytes"),
        bad_checksums=_read_bursts(reader, "bad_checksums", "count"),
        noise_scale=reader.number("noise_scale", 1.0, low=0, high=10),
    )
    reader.finish()
    return gnss


def _read_codes(reader: _Reader, key: str) -> tuple[str, ...]:
    value = reader.raw(key)
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise reader.error(key, 'must be a list of codes like ["P0301"]')
    for code in value:
        if (
            len(code) != 5
            or code[0] not in "PCBU"
            or not all(c in "0123456789ABCDEF" for c in code[1:])
        ):
            raise reader.error(key, f"not a trouble code: {code!r} (expected like P0301)")
    return tuple(value)


def _read_dtc(reader: _Reader) -> DTCChange:
    t_s = reader.number("t_s", low=0)
    set_codes = _read_codes(reader, "set") if reader.has("set") else ()
    clear_all = False
    clear_codes: tuple[str, ...] = ()
    if reader.has("clear"):
        if reader.table["clear"] == "all":
            reader.raw("clear")
            clear_all = True
        else:
            clear_codes = _read_codes(reader, "clear")
    pending = reader.raw("pending") if reader.has("pending") else False
    if not isinstance(pending, bool):
        raise reader.error("pending", "must be true or false")
    if not set_codes and not clear_codes and not clear_all:
        raise reader.error("set", 'a [[dtc]] entry needs set = [...] or clear = [...] / "all"')
    reader.finish()
    return DTCChange(t_s, set_codes, clear_codes, clear_all, pending)


def _read_step(reader: _Reader) -> Step:
    kind_text = reader.string("do")
    try:
        kind = StepKind(kind_text)
    except ValueError:
        choices = ", ".join(k.value for k in StepKind)
        raise reader.error("do", f"unknown step {kind_text!r} (one of {choices})") from None
    if kind is StepKind.DRIVE:
        distance = (
            reader.number("distance_m", 0.0, positive=True) if reader.has("distance_m") else None
        )
        step = Step(
            kind=kind,
            distance_m=distance,
            speed_kmh=reader.number("speed_kmh", 40.0, low=5.0, high=180.0),
            end_speed_kmh=reader.number("end_speed_kmh", 0.0, low=0.0, high=180.0),
            accel_mps2=reader.number("accel_mps2", 1.2, low=0.2, high=6.0),
            decel_mps2=reader.number("decel_mps2", 1.8, low=0.2, high=9.0),
            lateral_mps2=reader.number("lateral_mps2", 1.8, low=0.3, high=8.0),
        )
        if step.end_speed_kmh > step.speed_kmh:
            raise reader.error("end_speed_kmh", "must not exceed speed_kmh")
    else:
        step = Step(kind=kind, duration_s=reader.number("duration_s", positive=True, high=86400))
    reader.finish()
    return step
