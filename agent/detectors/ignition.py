"""Ignition detector: ignition_on / ignition_off from the fused ignition state."""

from __future__ import annotations

from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from drivers.samples import Sample


class IgnitionDetector:
    """Emits one event per change of :attr:`MotionTracker.ignition` (GPIO, RPM or voltage).

    The first state learnt after start is reported only when it is on: an agent that boots with
    the key off has seen no ignition_off happen.
    """

    def __init__(self) -> None:
        self._state: bool | None = None

    def feed(self, sample: Sample, m: MotionTracker) -> list[Event]:
        if m.ignition is None or m.ignition == self._state:
            return []
        first = self._state is None
        self._state = m.ignition
        if first and not m.ignition:
            return []
        ts = m.ignition_ts if m.ignition_ts is not None else sample.ts_mono
        pos = m.position()
        etype = EventType.IGNITION_ON if m.ignition else EventType.IGNITION_OFF
        return [
            Event(
                etype,
                ts,
                None if pos is None else pos[0],
                None if pos is None else pos[1],
                {"source": m.ignition_source},
            )
        ]
