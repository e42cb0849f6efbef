"""Ground truth: every fleet event that happened in a drive, derived from the vehicle model itself.

The definitions are ARCHITECTURE.md's event table with its default thresholds, applied to the
model's TRUE kinematics (speed, acceleration, lateral acceleration, position, ignition, engine),
never to the noisy GNSS the agent sees. ``t_s`` is the onset of the condition (for *_end,
*_regained and *_exit: when it ended); confirmation periods decide whether an event exists, not
its time. Conventions where the table leaves room (documented in docs/simulator.md):
- an ignition line that is on at t = 0 gives ``ignition_on`` at 0; off at t = 0 gives nothing;
- standing still from t = 0 is not a delivery stop; a fix or link that was never up is not "lost";
- a van inside a geofence at t = 0 gives ``geofence_enter`` at 0 with ``initial: true``;
- a trip ends at an ignition off that lasts >= 60 s within a standstill of >= 300 s;
- conditions still running when the scenario ends get no closing event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from simulator.model import DT_S, VehicleModel

HARSH_ACCEL_MPS2 = 2.5
HARSH_BRAKE_MPS2 = -3.0
HARSH_TURN_MPS2 = 3.0
HARSH_MIN_S = 0.5
HARSH_MIN_SPEED_KMH = 10.0
TURN_MIN_SPEED_KMH = 30.0
IDLE_MIN_S = 120.0
IDLE_SPEED_KMH = 2.0
IDLE_END_MOVING_S = 10.0
STOP_MIN_S = 180.0
TRIP_START_SPEED_KMH = 5.0
TRIP_END_OFF_S = 60.0
TRIP_SPLIT_STOP_S = 300.0
SPEEDING_MIN_S = 10.0
SPEEDING_HYSTERESIS_KMH = 5.0
GEOFENCE_CONFIRM_S = 3.0
LINK_LOST_S = 10.0
LOW_FUEL_PCT = 10.0
LOW_BATTERY_V = 12.3
LOW_BATTERY_S = 180.0
IGNITION_DEBOUNCE_S = 2.0


class TruthType(StrEnum):
    """Exactly the values of the agent's EventType (a copy: the simulator imports no agent)."""

    IGNITION_ON = "ignition_on"
    IGNITION_OFF = "ignition_off"
    TRIP_START = "trip_start"
    TRIP_END = "trip_end"
    IDLE_START = "idle_start"
    IDLE_END = "idle_end"
    HARSH_ACCEL = "harsh_accel"
    HARSH_BRAKE = "harsh_brake"
    HARSH_TURN = "harsh_turn"
    SPEEDING_START = "speeding_start"
    SPEEDING_END = "speeding_end"
    GEOFENCE_ENTER = "geofence_enter"
    GEOFENCE_EXIT = "geofence_exit"
    STOP_START = "stop_start"
    STOP_END = "stop_end"
    GNSS_LOST = "gnss_lost"
    GNSS_REGAINED = "gnss_regained"
    OBD_LOST = "obd_lost"
    OBD_REGAINED = "obd_regained"
    DTC_SET = "dtc_set"
    DTC_CLEARED = "dtc_cleared"
    LOW_FUEL = "low_fuel"
    LOW_BATTERY = "low_battery"


_ORDER = {t: i for i, t in enumerate(TruthType)}


@dataclass(frozen=True, slots=True)
class TruthEvent:
    type: TruthType
    t_s: float
    lat: float | None
    lon: float | None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": self.type.value,
                "t_s": round(self.t_s, 1),
                "lat": None if self.lat is None else round(self.lat, 6),
                "lon": None if self.lon is None else round(self.lon, 6),
                "data": dict(self.data),
            },
            separators=(",", ":"),
        )


def runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, end_exclusive) index ranges where ``flags`` is True."""
    result = []
    start: int | None = None
    for k, flag in enumerate(flags):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            result.append((start, k))
            start = None
    if start is not None:
        result.append((start, len(flags)))
    return result


def _samples(seconds: float) -> int:
    return math.ceil(seconds / DT_S - 1e-9)


class _Geofence:
    def __init__(self, feature: Mapping[str, Any]) -> None:
        props = feature["properties"]
        geometry = feature["geometry"]
        self.id: str = props["id"]
        self.name: str | None = props.get("name")
        limit = props.get("speed_limit_kmh")
        self.speed_limit_kmh: float | None = None if limit is None else float(limit)
        self.radius_m: float | None = None
        self.center: tuple[float, float] = (0.0, 0.0)
        self.ring: list[tuple[float, float]] = []
        if geometry["type"] == "Point":
            lon, lat = geometry["coordinates"][:2]
            self.center = (float(lat), float(lon))
            self.radius_m = float(props["radius_m"])
        else:
            self.ring = [(float(p[1]), float(p[0])) for p in geometry["coordinates"][0]]

    def contains(self, lat: float, lon: float) -> bool:
        if self.radius_m is not None:
            d_lat = math.radians(lat - self.center[0])
            d_lon = math.radians(lon - self.center[1]) * math.cos(math.radians(self.center[0]))
            return math.hypot(d_lat, d_lon) * 6_371_000.0 <= self.radius_m
        inside = False
        ring = self.ring
        j = len(ring) - 1
        for i in range(len(ring)):
            (lat_i, lon_i), (lat_j, lon_j) = ring[i], ring[j]
            if (lat_i > lat) != (lat_j > lat):
                cross = lon_i + (lat - lat_i) * (lon_j - lon_i) / (lat_j - lat_i)
                if lon < cross:
                    inside = not inside
            j = i
        return inside


class TruthBuilder:
    """Derives the truth events of one model (construct, then ``events()``)."""

    def __init__(self, model: VehicleModel) -> None:
        self.m = model
        self.n = model.n
        self.kmh = [v * 3.6 for v in model.v_mps]
        self.points = [model.route.locate(s) for s in model.s_m]
        self.out: list[TruthEvent] = []

    def _emit(self, kind: TruthType, k: int, data: Mapping[str, Any] | None = None) -> None:
        k = min(k, self.n - 1)
        point = self.points[k]
        self.out.append(
            TruthEvent(kind, round(k * DT_S, 1), point.lat, point.lon, dict(data or {}))
        )

    def events(self) -> list[TruthEvent]:
        self._ignition()
        self._trips()
        self._idle()
        self._harsh(TruthType.HARSH_ACCEL, self._accelerating)
        self._harsh(TruthType.HARSH_BRAKE, lambda k: self.m.accel_mps2[k] <= HARSH_BRAKE_MPS2)
        self._harsh(TruthType.HARSH_TURN, self._turning)
        self._speeding()
        self._geofences()
        self._stops()
        self._links()
        self._dtcs()
        self._low_fuel()
        self._low_battery()
        return sorted(self.out, key=lambda e: (e.t_s, _ORDER[e.type]))

    def _ignition(self) -> None:
        ignition = self.m.ignition
        level: bool | None = None
        k = 0
        while k < self.n:
            j = k
            while j < self.n and ignition[j] == ignition[k]:
                j += 1
            long_enough = (j - k) * DT_S >= IGNITION_DEBOUNCE_S or j == self.n
            if long_enough and ignition[k] != level:
                if level is not None or ignition[k]:
                    self._emit(TruthType.IGNITION_ON if ignition[k] else TruthType.IGNITION_OFF, k)
                level = ignition[k]
            k = j

    def _standstill_around(self, k: int) -> tuple[int, int]:
        a = k
        while a > 0 and self.m.v_mps[a - 1] < 0.01:
            a -= 1
        b = k
        while b < self.n and self.m.v_mps[b] < 0.01:
            b += 1
        return a, b

    def _trips(self) -> None:
        m = self.m
        start: int | None = None
        on_since: int | None = None
        k = 0
        while k < self.n:
            if start is None:
                if m.ignition[k] and on_since is None:
                    on_since = k
                if not m.ignition[k]:
                    on_since = None
                moved_m = m.s_m[k] - m.s_m[on_since] if on_since is not None else 0.0
                if m.ignition[k] and (self.kmh[k] > TRIP_START_SPEED_KMH or moved_m >= 200.0):
                    start = k
                    self._emit(
                        TruthType.TRIP_START,
                        k,
                        {
                            "odometer_km": round(
                                m.scenario.vehicle.odometer_km + m.s_m[k] / 1000.0, 2
                            )
                        },
                    )
                k += 1
                continue
            if m.ignition[k]:
                k += 1
                continue
            off_end = k
            while off_end < self.n and not m.ignition[off_end]:
                off_end += 1
            still_from, still_to = self._standstill_around(k)
            if (off_end - k) * DT_S >= TRIP_END_OFF_S and (
                still_to - still_from
            ) * DT_S >= TRIP_SPLIT_STOP_S:
                self._emit(TruthType.TRIP_END, k, self._trip_data(start, k))
                start = None
                on_since = None
            k = off_end

    def _trip_data(self, a: int, b: int) -> dict[str, Any]:
        m = self.m
        idle_samples = sum(1 for k in range(a, b) if m.engine[k] and self.kmh[k] < IDLE_SPEED_KMH)
        return {
            "duration_s": round((b - a) * DT_S, 1),
            "distance_km": round((m.s_m[b] - m.s_m[a]) / 1000.0, 3),
            "fuel_used_l": round(m.fuel_used_l[b] - m.fuel_used_l[a], 3),
            "max_speed_kmh": round(max(self.kmh[a : b + 1]), 1),
            "idle_s": round(idle_samples * DT_S, 1),
        }

    def _idle(self) -> None:
        m = self.m
        idling = [
            m.ignition[k] and m.engine[k] and self.kmh[k] < IDLE_SPEED_KMH for k in range(self.n)
        ]
        spans = runs(idling)
        i = 0
        while i < len(spans):
            start, end = spans[i]
            if (end - start) * DT_S < IDLE_MIN_S:
                i += 1
                continue
            # Brief creeping forward (< 10 s, ignition on) does not end an idle period.
            while i + 1 < len(spans):
                gap_start, gap_end = end, spans[i + 1][0]
                brief = (gap_end - gap_start) * DT_S < IDLE_END_MOVING_S
                if brief and all(m.ignition[g] for g in range(gap_start, gap_end)):
                    i += 1
                    end = spans[i][1]
                else:
                    break
            self._emit(TruthType.IDLE_START, start)
            if end < self.n:
                self._emit(
                    TruthType.IDLE_END,
                    end,
                    {
                        "duration_s": round((end - start) * DT_S, 1),
                        "fuel_used_l": round(m.fuel_used_l[end] - m.fuel_used_l[start], 3),
                    },
                )
            i += 1

    def _accelerating(self, k: int) -> bool:
        # "at >= 10 km/h" holds throughout (unlike braking, judged at the onset speed).
        return self.m.accel_mps2[k] >= HARSH_ACCEL_MPS2 and self.kmh[k] >= HARSH_MIN_SPEED_KMH

    def _turning(self, k: int) -> bool:
        return (
            self.m.lateral_mps2(k) >= HARSH_TURN_MPS2
            and self.kmh[k] >= TURN_MIN_SPEED_KMH
            and self.m.gnss_fix_at(k * DT_S)
        )

    def _harsh(self, kind: TruthType, condition: Callable[[int], bool]) -> None:
        m = self.m
        for start, end in runs([condition(k) for k in range(self.n)]):
            if end - start < _samples(HARSH_MIN_S):
                continue
            if kind is TruthType.HARSH_BRAKE and self.kmh[start] < HARSH_MIN_SPEED_KMH:
                continue
            data: dict[str, Any] = {
                "duration_s": round((end - start) * DT_S, 1),
                "speed_kmh": round(self.kmh[start], 1),
            }
            if kind is TruthType.HARSH_ACCEL:
                data["peak_accel_mps2"] = round(max(m.accel_mps2[start:end]), 2)
            elif kind is TruthType.HARSH_BRAKE:
                peak = min(m.accel_mps2[start:end])
                data["peak_accel_mps2"] = round(peak, 2)
                data["severity"] = "high" if peak <= -5.0 else "medium" if peak <= -4.0 else "low"
            else:
                data["peak_lateral_mps2"] = round(
                    max(m.lateral_mps2(k) for k in range(start, end)), 2
                )
                data["direction"] = "left" if m.curvature_per_m[start] > 0 else "right"
            self._emit(kind, start, data)

    def _limit_kmh(self, k: int, fences: list[_Geofence]) -> float:
        point = self.points[k]
        limits = [
            f.speed_limit_kmh
            for f in fences
            if f.speed_limit_kmh is not None and f.contains(point.lat, point.lon)
        ]
        return min(limits) if limits else self.m.scenario.speed_limit_kmh

    def _speeding(self) -> None:
        fences = self._fences()
        candidate: int | None = None
        started: int | None = None
        max_kmh = 0.0
        limit_at_start = 0.0
        for k in range(self.n):
            limit = self._limit_kmh(k, fences)
            speed = self.kmh[k]
            if started is None:
                if speed > limit:
                    candidate = k if candidate is None else candidate
                    if (k - candidate) * DT_S >= SPEEDING_MIN_S:
                        started, max_kmh, limit_at_start = candidate, speed, limit
                        self._emit(TruthType.SPEEDING_START, candidate, {"limit_kmh": limit})
                else:
                    candidate = None
            else:
                max_kmh = max(max_kmh, speed)
                if speed < limit - SPEEDING_HYSTERESIS_KMH:
                    self._emit(
                        TruthType.SPEEDING_END,
                        k,
                        {
                            "duration_s": round((k - started) * DT_S, 1),
                            "max_speed_kmh": round(max_kmh, 1),
                            "limit_kmh": limit_at_start,
                        },
                    )
                    started = candidate = None

    def _fences(self) -> list[_Geofence]:
        geofences = self.m.scenario.geofences
        if not geofences:
            return []
        return [_Geofence(f) for f in geofences["features"]]

    def _geofences(self) -> None:
        confirm = _samples(GEOFENCE_CONFIRM_S)
        for fence in self._fences():
            inside = [fence.contains(p.lat, p.lon) for p in self.points]
            state = inside[0]
            ident: dict[str, Any] = {"geofence_id": fence.id}
            if fence.name:
                ident["name"] = fence.name
            if state:
                self._emit(TruthType.GEOFENCE_ENTER, 0, {**ident, "initial": True})
            k = 0
            while k < self.n:
                if inside[k] != state:
                    j = k
                    while j < self.n and inside[j] != state:
                        j += 1
                    if j - k >= confirm:
                        state = inside[k]
                        kind = TruthType.GEOFENCE_ENTER if state else TruthType.GEOFENCE_EXIT
                        self._emit(kind, k, ident)
                    k = j
                else:
                    k += 1

    def _stops(self) -> None:
        still = [v < 0.01 for v in self.m.v_mps]
        for start, end in runs(still):
            if start == 0 or (end - start) * DT_S < STOP_MIN_S:
                continue
            self._emit(TruthType.STOP_START, start)
            if end < self.n:
                self._emit(TruthType.STOP_END, end, {"dwell_s": round((end - start) * DT_S, 1)})

    def _links(self) -> None:
        links = (
            (TruthType.GNSS_LOST, TruthType.GNSS_REGAINED, self.m.gnss_fix_at),
            (TruthType.OBD_LOST, TruthType.OBD_REGAINED, self.m.obd_online_at),
        )
        for lost, regained, up_at in links:
            down = [not up_at(k * DT_S) for k in range(self.n)]
            for start, end in runs(down):
                if start == 0 or (end - start) * DT_S < LINK_LOST_S:
                    continue
                online = self.m.gnss_online_at if lost is TruthType.GNSS_LOST else up_at
                reason = "no_fix" if online(start * DT_S) else "unplugged"
                self._emit(lost, start, {"reason": reason})
                if end < self.n:
                    self._emit(regained, end, {"duration_s": round((end - start) * DT_S, 1)})

    def _dtcs(self) -> None:
        previous: tuple[str, ...] = ()
        times = sorted({c.t_s for c in self.m.scenario.dtcs if not c.pending})
        for t_s in times:
            codes = self.m.dtcs_at(t_s)
            k = self.m.index_at(t_s)
            new = [c for c in codes if c not in previous]
            gone = [c for c in previous if c not in codes]
            if new:
                self._emit(TruthType.DTC_SET, k, {"codes": new})
            if gone:
                self._emit(TruthType.DTC_CLEARED, k, {"codes": gone})
            previous = codes

    def _low_fuel(self) -> None:
        low = [self.m.fuel_level_pct(k) < LOW_FUEL_PCT for k in range(self.n)]
        for start, _ in runs(low):
            self._emit(
                TruthType.LOW_FUEL,
                start,
                {"fuel_level_pct": round(self.m.fuel_level_pct(start), 1)},
            )

    def _low_battery(self) -> None:
        m = self.m
        # The definition is on the *adapter* voltage, and ATRV reports tenths of a volt: a
        # battery at 12.33 V reads "12.3V" and is low by the rule. Truth applies the rule to
        # what the adapter reports (the same formatting the emulator uses), not to the exact
        # model voltage, or no detector could ever match it.
        low = [
            float(f"{m.battery_v[k]:.1f}") <= LOW_BATTERY_V and not m.engine[k]
            for k in range(self.n)
        ]
        for start, end in runs(low):
            if (end - start) * DT_S >= LOW_BATTERY_S:
                self._emit(
                    TruthType.LOW_BATTERY, start, {"battery_v": round(m.battery_v[start], 2)}
                )


def derive_truth(model: VehicleModel) -> list[TruthEvent]:
    return TruthBuilder(model).events()


def write_truth(events: Iterable[TruthEvent], path: str | Path) -> None:
    Path(path).write_text("".join(e.to_json() + "\n" for e in events), encoding="utf-8")


def read_truth(path: str | Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line
    ]
