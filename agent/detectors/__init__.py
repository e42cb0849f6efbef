"""Detectors: every fleet event, as pure state machines run in a fixed order over each sample.

``build_detectors(cfg, geofences)`` returns one :class:`DetectorChain` whose ``feed(sample)``
runs them all. Nothing here does I/O or reads a clock: time is ``ts_mono`` of the samples, so a
replay gives the same events as the live daemon, and time running backwards or gaps never raise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

from agent.config import Config, HarshDetectSection
from agent.detectors.dtc import DTCDetector
from agent.detectors.geofence import GeofenceDetector
from agent.detectors.harsh import HarshDetector
from agent.detectors.idle import IdleDetector
from agent.detectors.ignition import IgnitionDetector
from agent.detectors.link import LinkDetector
from agent.detectors.motion import MotionTracker, TracePoint
from agent.detectors.speeding import SpeedingDetector
from agent.detectors.stop import StopDetector
from agent.detectors.supply import SupplyDetector
from agent.detectors.trip import TripDetector
from agent.events import Event, EventType
from agent.geofence import GeofenceSet
from drivers.samples import Sample

__all__ = ["DetectorChain", "build_detectors"]

DRIVING = frozenset(
    {
        EventType.HARSH_ACCEL,
        EventType.HARSH_BRAKE,
        EventType.HARSH_TURN,
        EventType.SPEEDING_START,
        EventType.SPEEDING_END,
    }
)


class Stage(Protocol):
    """One detector family: reads the shared motion view, returns its events."""

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]: ...


class DetectorChain:
    """Runs the motion tracker, then every detector family in a fixed order.

    Driving events wait until ``evidence_after_s`` of samples after their onset exist, then leave
    with their evidence window attached. The trip detector sees every released event, to count
    them.
    """

    def __init__(self, cfg: Config, geofences: GeofenceSet) -> None:
        d = cfg.detect
        self._harsh_cfg: HarshDetectSection = d.harsh
        self.motion = MotionTracker(
            d.motion,
            d.ignition,
            accel_window_s=d.harsh.accel_window_s,
            trace_s=d.harsh.evidence_before_s
            + d.harsh.evidence_after_s
            + 2 * d.harsh.accel_window_s
            + 12.0,
        )
        self.ignition = IgnitionDetector()
        self.link = LinkDetector(d.link)
        self.dtc = DTCDetector()
        self.supply = SupplyDetector(d.supply)
        self.geofence = GeofenceDetector(d.geofence, geofences)
        self.speeding = SpeedingDetector(d.speeding, geofences)
        self.harsh = HarshDetector(d.harsh)
        self.idle = IdleDetector(d.idle, d.motion)
        self.stop = StopDetector(d.stop)
        self.trip = TripDetector(d.trip, d.motion)
        self._stages: tuple[Stage, ...] = (
            self.ignition,
            self.link,
            self.dtc,
            self.supply,
            self.geofence,
            self.speeding,
            self.harsh,
            self.idle,
            self.stop,
            self.trip,
        )
        self._waiting: list[Event] = []
        self.samples_skipped = 0

    def feed(self, sample: Sample) -> list[Event]:
        if not math.isfinite(sample.ts_mono):
            self.samples_skipped += 1
            return []
        self.motion.update(sample)
        found: list[Event] = []
        for stage in self._stages:
            found += stage.feed(sample, self.motion)
        return self._release(found)

    def tick(self, now_mono: float) -> list[Event]:
        """Advance time without a sample: confirms link outages and trip ends, releases evidence."""
        if not math.isfinite(now_mono):
            return []
        found = self.link.tick(now_mono, self.motion) + self.trip.tick(now_mono, self.motion)
        return self._release(found, now_mono)

    def flush(self) -> list[Event]:
        """Release every waiting driving event now, with the evidence there is (end of replay)."""
        waiting, self._waiting = self._waiting, []
        out = [self._with_evidence(e) for e in waiting]
        self.trip.observe(out)
        return out

    def _release(self, found: list[Event], now: float | None = None) -> list[Event]:
        out: list[Event] = []
        for e in found:
            if e.type in DRIVING:
                self._waiting.append(e)
            else:
                out.append(e)
        now_s = self.motion.now_s if now is None else max(now, self.motion.now_s or now)
        if self._waiting and now_s is not None:
            after = self._harsh_cfg.evidence_after_s
            ready = [e for e in self._waiting if now_s >= e.ts_mono + after]
            if ready:
                self._waiting = [e for e in self._waiting if now_s < e.ts_mono + after]
                ready.sort(key=lambda e: e.ts_mono)
                out += [self._with_evidence(e) for e in ready]
        self.trip.observe(out)
        return out

    def _with_evidence(self, e: Event) -> Event:
        lo = e.ts_mono - self._harsh_cfg.evidence_before_s
        hi = e.ts_mono + self._harsh_cfg.evidence_after_s
        window = tuple(_compact(p, e.ts_mono) for p in self.motion.trace if lo <= p.ts_mono <= hi)
        return dataclasses.replace(e, evidence=window)


def _compact(p: TracePoint, origin: float) -> dict[str, float | None]:
    return {
        "t_rel_s": round(p.ts_mono - origin, 2),
        "speed_kmh": p.speed_kmh,
        "accel_mps2": p.accel_mps2,
        "lat": p.lat,
        "lon": p.lon,
        "heading_deg": p.heading_deg,
    }


def build_detectors(cfg: Config, geofences: GeofenceSet) -> DetectorChain:
    """Every detector for ``cfg``, with geofences the composition root has read and parsed."""
    return DetectorChain(cfg, geofences)
