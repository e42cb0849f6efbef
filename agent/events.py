"""Events: what detectors emit, and the closed set of event types in the MQTT contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from drivers.samples import Sample


class EventType(StrEnum):
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


@dataclass(frozen=True, slots=True)
class Event:
    """One detected event. ``ts_mono`` is when it happened (for *_end events: when it ended).

    ``data`` holds the event's key values with units in the names (``duration_s``,
    ``fuel_used_l``, ``max_speed_kmh``...), JSON-compatible. ``evidence`` is a short window of
    samples around a driving event, each a JSON-compatible mapping with ``t_rel_s``.
    """

    type: EventType
    ts_mono: float
    lat: float | None = None
    lon: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[Mapping[str, Any], ...] = ()


class Detector(Protocol):
    """A pure state machine: samples in, events out. No I/O, no clock reads.

    ``tick`` lets confirmations and evidence windows complete while no samples arrive (time is
    passed in, never read); ``flush`` releases whatever is still held back, at shutdown.
    """

    def feed(self, sample: Sample) -> list[Event]: ...

    def tick(self, now_mono: float) -> list[Event]: ...

    def flush(self) -> list[Event]: ...
