"""Trouble-code detector: dtc_set / dtc_cleared from successive mode 03 reads."""

from __future__ import annotations

from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import DTCSample, Sample


class DTCDetector:
    """One event for the codes that appear in, one for those that vanish from, a mode 03 read.

    Codes present at the first read after start are reported as set: the agent cannot know
    whether a backend has seen them, and a duplicate is cheaper than a missed fault.
    """

    def __init__(self) -> None:
        self._codes: frozenset[str] | None = None

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        if not isinstance(sample, DTCSample):
            return []
        codes = frozenset(c for c in sample.stored if isinstance(c, str) and c)
        before = self._codes if self._codes is not None else frozenset()
        self._codes = codes
        pos = m.position()
        lat, lon = (None, None) if pos is None else pos
        out: list[Event] = []
        if codes - before:
            data = {"codes": sorted(codes - before), "stored": sorted(codes)}
            out.append(Event(EventType.DTC_SET, sample.ts_mono, lat, lon, data))
        if before - codes:
            data = {"codes": sorted(before - codes), "stored": sorted(codes)}
            out.append(Event(EventType.DTC_CLEARED, sample.ts_mono, lat, lon, data))
        return out
