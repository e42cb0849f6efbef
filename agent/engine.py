"""Engine summary: OBD readings in, one summary record per interval out (pure; time from samples).

A backend wants the engine's story without every reading: fuel level and odometer trends, fuel
burned, time spent idling, how hard the engine worked. Readings are gathered into windows of
``interval_s`` (sample time) and each window becomes one durable record on the ``engine`` topic.
A window also closes early when the story breaks: ignition off, the OBD link lost, no reading for
``interval_s`` (the adapter went silent) or the end of a run, so a summary never straddles a gap.

Figures, all with units in their names:
- ``window_s``, ``readings``: the span from the first to the last reading, and how many;
- ``<field>_avg`` / ``<field>_max`` for rpm, speed, engine load and fuel rate (mean of readings);
- ``fuel_used_l``: fuel rate integrated over time, each rate holding until the next poll of it
  (a rate older than ``max_step_s`` counts for nothing, so a stalled adapter cannot invent
  litres);
- ``idle_s``: time with the engine running (rpm > 0) and the van standing (speed < ``idle_kmh``);
- the newest coolant, intake, fuel level, voltage, runtime and odometer values;
- ``fuel_rate_source``: which source the newest fuel rate came from (PID 5E, MAF, speed-density).
A figure the adapter never supplied in the window is left out, not reported as zero. Readings
with nothing but the adapter's voltage (engine off: the ECU is not queried) open no window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.samples import IgnitionSample, Link, LinkSample, LinkState, OBDReading, Sample

_AVERAGED = ("rpm", "speed_kmh", "engine_load_pct", "fuel_rate_lph")
_NEWEST = (
    "coolant_c",
    "intake_c",
    "fuel_level_pct",
    "voltage_v",
    "runtime_s",
    "odometer_km",
)


@dataclass(frozen=True, slots=True)
class EngineSummary:
    """One closed window: ``ts_mono`` is its last reading's time."""

    ts_mono: float
    data: dict[str, Any]


@dataclass(slots=True)
class _Window:
    first_s: float
    last_s: float
    readings: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    maxima: dict[str, float] = field(default_factory=dict)
    newest: dict[str, float] = field(default_factory=dict)
    fuel_used_l: float = 0.0
    fuel_seen: bool = False
    idle_s: float = 0.0
    source: str | None = None


class EngineSummarizer:
    """Windows of OBD readings, closed every ``interval_s`` (0 switches summaries off)."""

    def __init__(self, interval_s: float, *, max_step_s: float = 10.0, idle_kmh: float = 2.0):
        self.interval_s = interval_s
        self.max_step_s = max_step_s
        self.idle_kmh = idle_kmh
        self._window: _Window | None = None
        # Newest value and its time of each integrated figure (zero-order hold between polls).
        self._held: dict[str, tuple[float, float]] = {}

    def feed(self, sample: Sample) -> list[EngineSummary]:
        if self.interval_s <= 0:
            return []
        if isinstance(sample, OBDReading):
            return self._reading(sample)
        ended = (isinstance(sample, IgnitionSample) and not sample.on) or (
            isinstance(sample, LinkSample)
            and sample.link is Link.OBD
            and sample.state is not LinkState.UP
        )
        return self.flush() if ended else []

    def tick(self, now_mono: float) -> list[EngineSummary]:
        """Close a window whose adapter went quiet for a whole interval."""
        w = self._window
        if w is not None and self.interval_s > 0 and now_mono - w.last_s >= self.interval_s:
            return self.flush()
        return []

    def flush(self) -> list[EngineSummary]:
        """Close the open window now (ignition off, link lost, end of run)."""
        w, self._window = self._window, None
        self._held.clear()
        return [] if w is None else [EngineSummary(w.last_s, _figures(w))]

    def _reading(self, r: OBDReading) -> list[EngineSummary]:
        out: list[EngineSummary] = []
        w = self._window
        if w is not None and r.ts_mono < w.last_s:
            # Time ran backwards (a replayed capture spliced, a clock fault): never a negative
            # duration; close what we have and start again from this reading.
            out = self.flush()
            w = None
        if w is not None:
            self._step(w, r.ts_mono)  # the time up to this reading belongs to the open window
            if r.ts_mono - w.first_s >= self.interval_s:
                out = self.flush()
                w = None
        if w is None:
            if not any(getattr(r, name) is not None for name in _AVERAGED):
                # Only the adapter's voltage (engine off, ECU not queried): no engine story;
                # low_battery and health cover a parked van.
                return out
            w = self._window = _Window(first_s=r.ts_mono, last_s=r.ts_mono)
        self._count(w, r)
        return out

    def _step(self, w: _Window, now_s: float) -> None:
        """Integrate from the previous reading to ``now_s`` with the values known then.

        Readings come in poll groups (speed and RPM often, fuel rate less often), so each
        figure holds its newest value until the next one, for at most ``max_step_s``.
        """
        prev_s = w.last_s
        w.last_s = now_s
        step_s = min(now_s - prev_s, self.max_step_s)
        if step_s <= 0:
            return
        rate = self._fresh("fuel_rate_lph", prev_s)
        if rate is not None:
            w.fuel_used_l += max(0.0, rate) * step_s / 3600.0
        rpm, speed = self._fresh("rpm", prev_s), self._fresh("speed_kmh", prev_s)
        if rpm is not None and rpm > 0 and speed is not None and speed < self.idle_kmh:
            w.idle_s += step_s

    def _fresh(self, name: str, at_s: float) -> float | None:
        held = self._held.get(name)
        if held is None or at_s - held[1] > self.max_step_s:
            return None
        return held[0]

    def _count(self, w: _Window, r: OBDReading) -> None:
        w.readings += 1
        for name in _AVERAGED:
            value = getattr(r, name)
            if value is not None:
                self._held[name] = (value, r.ts_mono)
                w.sums[name] = w.sums.get(name, 0.0) + value
                w.counts[name] = w.counts.get(name, 0) + 1
                w.maxima[name] = max(w.maxima.get(name, value), value)
        for name in _NEWEST:
            value = getattr(r, name)
            if value is not None:
                w.newest[name] = value
        if r.fuel_rate_lph is not None:
            w.fuel_seen = True
            if r.fuel_rate_source is not None:
                w.source = str(r.fuel_rate_source)


def _figures(w: _Window) -> dict[str, Any]:
    data: dict[str, Any] = {"window_s": round(w.last_s - w.first_s, 1), "readings": w.readings}
    for name in _AVERAGED:
        if name in w.counts:
            data[f"{name}_avg"] = round(w.sums[name] / w.counts[name], 1)
            data[f"{name}_max"] = round(w.maxima[name], 1)
    if w.fuel_seen:
        data["fuel_used_l"] = round(w.fuel_used_l, 4)
        if w.source is not None:
            data["fuel_rate_source"] = w.source
    if "rpm" in w.counts and "speed_kmh" in w.counts:
        data["idle_s"] = round(w.idle_s, 1)
    for name, value in w.newest.items():
        data[name] = round(value, 2)
    return data
