"""Geofences: circles and polygons loaded from GeoJSON, and the geometry to test fixes against them.

A circle is a ``Point`` feature with ``properties.radius_m``; a polygon is a ``Polygon`` or
``MultiPolygon`` feature (holes allowed). Every feature needs ``properties.id``; ``name`` and
``speed_limit_kmh`` are optional. Geometry is computed on a local equirectangular projection around
each fence, which is exact to well under a metre for fences of a few kilometres.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from agent.errors import ConfigError

EARTH_RADIUS_M = 6_371_008.8

Ring = tuple[tuple[float, float], ...]  # (x_m, y_m) in the fence's local projection


class GeofenceError(ConfigError):
    """The geofence file named in the configuration is missing, unreadable, or invalid."""


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Projection:
    """Local equirectangular projection around an origin: metres east (x) and north (y)."""

    lat0: float
    lon0: float

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        k = math.radians(1.0) * EARTH_RADIUS_M
        return ((lon - self.lon0) * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k)


@dataclass(frozen=True, slots=True)
class Circle:
    center_lat: float
    center_lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class Polygon:
    """One or more polygons (MultiPolygon), each an exterior ring and holes, in local metres."""

    projection: Projection
    parts: tuple[tuple[Ring, ...], ...]


@dataclass(frozen=True, slots=True)
class Geofence:
    id: str
    shape: Circle | Polygon
    name: str = ""
    speed_limit_kmh: float | None = None

    def contains(self, lat: float, lon: float) -> bool:
        if isinstance(self.shape, Circle):
            c = self.shape
            return distance_m(lat, lon, c.center_lat, c.center_lon) <= c.radius_m
        x, y = self.shape.projection.xy(lat, lon)
        return _in_polygon(self.shape.parts, x, y)

    def segment_inside(
        self, a: tuple[float, float], b: tuple[float, float]
    ) -> tuple[float, float] | None:
        """The first and last fraction (0..1) of segment a->b (lat, lon) inside, or None."""
        if isinstance(self.shape, Circle):
            proj = Projection(self.shape.center_lat, self.shape.center_lon)
            ax, ay = proj.xy(*a)
            bx, by = proj.xy(*b)
            return _segment_in_circle(ax, ay, bx, by, self.shape.radius_m)
        proj = self.shape.projection
        ax, ay = proj.xy(*a)
        bx, by = proj.xy(*b)
        cuts = [0.0, 1.0]
        for rings in self.shape.parts:
            for ring in rings:
                for i in range(len(ring)):
                    p, q = ring[i], ring[(i + 1) % len(ring)]
                    t = _segment_cut(ax, ay, bx, by, p, q)
                    if t is not None:
                        cuts.append(t)
        cuts.sort()
        inside: list[float] = []
        for lo, hi in itertools.pairwise(cuts):
            if hi - lo < 1e-12:
                continue
            mid = (lo + hi) / 2
            if _in_polygon(self.shape.parts, ax + (bx - ax) * mid, ay + (by - ay) * mid):
                inside.extend((lo, hi))
        # The endpoints are judged exactly as `contains` judges a fix, so a segment that only
        # touches the boundary (a corner, or along an edge) agrees with the fixes at its ends.
        if self.contains(*a):
            inside.append(0.0)
        if self.contains(*b):
            inside.append(1.0)
        if not inside:
            return None
        return (min(inside), max(inside))


@dataclass(frozen=True, slots=True)
class GeofenceSet:
    fences: tuple[Geofence, ...] = ()

    def containing(self, lat: float, lon: float) -> list[Geofence]:
        return [f for f in self.fences if f.contains(lat, lon)]

    def speed_limit_kmh(self, lat: float, lon: float) -> float | None:
        """The lowest limit of the fences holding the point, or None when none sets one."""
        limits = [
            f.speed_limit_kmh for f in self.containing(lat, lon) if f.speed_limit_kmh is not None
        ]
        return min(limits) if limits else None


def load_geofences(path: str | Path) -> GeofenceSet:
    """Read a GeoJSON FeatureCollection (or one Feature) of geofences."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GeofenceError(f"{p}: geofence file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GeofenceError(f"{p}: cannot read the geofence file ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeofenceError(f"{p}: not valid JSON: {exc}") from None
    return parse_geofences(doc, source=str(p))


def configured_geofences(path: str) -> GeofenceSet:
    """The geofences a ``detect.geofences_file`` value names; an empty value names none."""
    return load_geofences(path) if path else GeofenceSet()


def parse_geofences(doc: Any, *, source: str = "<geojson>") -> GeofenceSet:
    if not isinstance(doc, Mapping):
        raise GeofenceError(f"{source}: expected a GeoJSON object")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise GeofenceError(f"{source}: 'features' must be a list")
    elif kind == "Feature":
        features = [doc]
    else:
        raise GeofenceError(f"{source}: expected a FeatureCollection or Feature, got {kind!r}")
    fences: list[Geofence] = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        fence = _parse_feature(feature, f"{source}: features[{i}]")
        if fence.id in seen:
            raise GeofenceError(f"{source}: features[{i}]: duplicate id {fence.id!r}")
        seen.add(fence.id)
        fences.append(fence)
    return GeofenceSet(tuple(fences))


def _parse_feature(feature: Any, where: str) -> Geofence:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise GeofenceError(f"{where}: expected a Feature object")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise GeofenceError(f"{where}: 'properties' must be an object")
    fid = props.get("id")
    if not isinstance(fid, (str, int)) or isinstance(fid, bool) or str(fid) == "":
        raise GeofenceError(f"{where}: properties.id is required (a string)")
    name = props.get("name", "")
    if not isinstance(name, str):
        raise GeofenceError(f"{where}: properties.name must be a string")
    limit = props.get("speed_limit_kmh")
    if limit is not None and (not _is_number(limit) or not 0 < limit <= 300):
        raise GeofenceError(f"{where}: properties.speed_limit_kmh must be a number in (0, 300]")
    geom = feature.get("geometry")
    if not isinstance(geom, Mapping):
        raise GeofenceError(f"{where}: 'geometry' must be an object")
    gtype, coords = geom.get("type"), geom.get("coordinates")
    shape: Circle | Polygon
    if gtype == "Point":
        lon, lat = _position(coords, f"{where}: geometry.coordinates")
        radius = props.get("radius_m")
        if not _is_number(radius) or not 0 < radius <= 1_000_000:
            raise GeofenceError(f"{where}: a Point geofence needs properties.radius_m > 0")
        shape = Circle(lat, lon, float(radius))
    elif gtype in ("Polygon", "MultiPolygon"):
        polys = [coords] if gtype == "Polygon" else coords
        if not isinstance(polys, list) or not polys:
            raise GeofenceError(f"{where}: geometry.coordinates must be a non-empty list")
        first = _rings(polys[0], where)[0][0]
        proj = Projection(first[1], first[0])
        parts = tuple(
            tuple(tuple(proj.xy(lat, lon) for lon, lat in ring) for ring in _rings(poly, where))
            for poly in polys
        )
        shape = Polygon(proj, parts)
    else:
        raise GeofenceError(f"{where}: geometry type {gtype!r} is not Point, Polygon, MultiPolygon")
    return Geofence(str(fid), shape, name, None if limit is None else float(limit))


def _rings(poly: Any, where: str) -> list[list[tuple[float, float]]]:
    if not isinstance(poly, list) or not poly:
        raise GeofenceError(f"{where}: a polygon must be a non-empty list of rings")
    rings = []
    for ring in poly:
        if not isinstance(ring, list) or len(ring) < 4:
            raise GeofenceError(f"{where}: a polygon ring needs at least 4 positions")
        pts = [_position(c, f"{where}: ring position") for c in ring]
        if pts[0] == pts[-1]:
            pts = pts[:-1]
        rings.append(pts)
    return rings


def _position(coords: Any, where: str) -> tuple[float, float]:
    if (
        not isinstance(coords, list)
        or len(coords) < 2
        or not all(_is_number(c) for c in coords[:2])
        or not -180 <= coords[0] <= 180
        or not -90 <= coords[1] <= 90
    ):
        raise GeofenceError(f"{where}: expected [lon, lat] in degrees, got {coords!r}")
    return float(coords[0]), float(coords[1])


def _is_number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in_polygon(parts: Iterable[Sequence[Ring]], x: float, y: float) -> bool:
    for rings in parts:
        if _in_ring(rings[0], x, y) and not any(_in_ring(h, x, y) for h in rings[1:]):
            return True
    return False


def _in_ring(ring: Ring, x: float, y: float) -> bool:
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i]
        xj, yj = ring[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def _segment_cut(
    ax: float, ay: float, bx: float, by: float, p: tuple[float, float], q: tuple[float, float]
) -> float | None:
    """Fraction along a->b where it crosses edge p->q, or None."""
    rx, ry = bx - ax, by - ay
    sx, sy = q[0] - p[0], q[1] - p[1]
    den = rx * sy - ry * sx
    if abs(den) < 1e-12:
        return None
    t = ((p[0] - ax) * sy - (p[1] - ay) * sx) / den
    u = ((p[0] - ax) * ry - (p[1] - ay) * rx) / den
    if 0.0 <= t <= 1.0 and 0.0 <= u <= 1.0:
        return t
    return None


def _segment_in_circle(
    ax: float, ay: float, bx: float, by: float, r: float
) -> tuple[float, float] | None:
    dx, dy = bx - ax, by - ay
    a = dx * dx + dy * dy
    c = ax * ax + ay * ay - r * r
    if a < 1e-12:
        return (0.0, 1.0) if c <= 0 else None
    b = 2 * (ax * dx + ay * dy)
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    root = math.sqrt(disc)
    t0, t1 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    lo, hi = max(t0, 0.0), min(t1, 1.0)
    return (lo, hi) if lo <= hi else None
