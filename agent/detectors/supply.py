"""Supply detector: low_fuel (tank level) and low_battery (adapter voltage, engine off)."""

from __future__ import annotations

import math

from agent.config import SupplyDetectSection
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import OBDReading, Sample


class SupplyDetector:
    """Low fuel and low battery, each once per episode and re-armed by hysteresis."""

    def __init__(self, settings: SupplyDetectSection) -> None:
        self._s = settings
        self._fuel_low_since: float | None = None
        self._fuel_min_pct = 100.0
        self._fuel_armed = True
        self._batt_low_since: float | None = None
        self._batt_min_v = 99.0
        self._batt_armed = True

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        if not isinstance(sample, OBDReading):
            return []
        out: list[Event] = []
        ts = sample.ts_mono
        pos = m.position()
        lat, lon = (None, None) if pos is None else pos
        fuel = sample.fuel_level_pct
        if fuel is not None and math.isfinite(fuel):
            if fuel >= self._s.low_fuel_rearm_pct:
                self._fuel_armed = True
            if fuel < self._s.low_fuel_pct and self._fuel_armed:
                if self._fuel_low_since is None or ts < self._fuel_low_since:
                    self._fuel_low_since, self._fuel_min_pct = ts, fuel
                self._fuel_min_pct = min(self._fuel_min_pct, fuel)
                if ts - self._fuel_low_since >= self._s.low_fuel_confirm_s:
                    out.append(
                        Event(
                            EventType.LOW_FUEL,
                            self._fuel_low_since,
                            lat,
                            lon,
                            {"fuel_level_pct": round(self._fuel_min_pct, 1)},
                        )
                    )
                    self._fuel_armed = False
                    self._fuel_low_since = None
            else:
                self._fuel_low_since = None
        volt = sample.voltage_v
        if volt is not None and math.isfinite(volt):
            engine_on = m.engine_running()
            if volt > self._s.low_battery_rearm_v or engine_on:
                self._batt_armed = True
            if volt <= self._s.low_battery_v and not engine_on and self._batt_armed:
                if self._batt_low_since is None or ts < self._batt_low_since:
                    self._batt_low_since, self._batt_min_v = ts, volt
                self._batt_min_v = min(self._batt_min_v, volt)
                if ts - self._batt_low_since >= self._s.low_battery_s:
                    out.append(
                        Event(
                            EventType.LOW_BATTERY,
                            self._batt_low_since,
                            lat,
                            lon,
                            {"voltage_v": round(self._batt_min_v, 2)},
                        )
                    )
                    self._batt_armed = False
                    self._batt_low_since = None
            else:
                self._batt_low_since = None
        return out
