"""Encoder: turns positions and events into MQTT messages with the v1 envelope."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.events import Event
from agent.reporter import Position
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase, iso

SCHEMA_VERSION = 1


class Lane(StrEnum):
    """Which path a message takes to the broker."""

    EVENT = "event"  # committed to the spool at once
    POSITION = "pos"  # batched in memory up to spool.flush_interval_s, then committed
    LIVE = "live"  # retained newest position, published at once, never spooled
    STATE = "state"
    HEALTH = "health"
    ENGINE = "engine"
    RESULT = "result"  # command results


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: Mapping[str, Any]
    lane: Lane
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Identity:
    device_id: str
    boot_id: str
    prefix: str = "fleet/v1"

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{self.device_id}/{suffix}"


def read_boot_id() -> str:
    """The kernel's boot id (changes every boot), or a random one where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(uuid.uuid4())


@dataclass(slots=True)
class Encoder:
    identity: Identity
    seq: SequenceCounter
    timebase: TimeBase
    _fields: dict[str, Any] = field(default_factory=dict)

    def envelope(self, kind: str, ts_mono: float) -> dict[str, Any]:
        ts, source = self.timebase.utc(ts_mono)
        return {
            "schema": f"{kind}/{SCHEMA_VERSION}",
            "device_id": self.identity.device_id,
            "boot_id": self.identity.boot_id,
            "seq": self.seq.take(),
            "ts": iso(ts),
            "time_source": str(source),
        }

    def position_record(self, pos: Position) -> dict[str, Any]:
        ts, source = self.timebase.utc(pos.ts_mono)
        rec: dict[str, Any] = {
            "seq": self.seq.take(),
            "ts": iso(ts),
            "lat": round(pos.lat, 7),
            "lon": round(pos.lon, 7),
        }
        if pos.alt_m is not None:
            rec["alt_m"] = round(pos.alt_m, 1)
        if pos.speed_kmh is not None:
            rec["speed_kmh"] = round(pos.speed_kmh, 1)
        if pos.course_deg is not None:
            rec["course_deg"] = round(pos.course_deg, 1)
        if pos.hdop is not None:
            rec["hdop"] = round(pos.hdop, 1)
        if pos.sats is not None:
            rec["sats"] = pos.sats
        rec["reason"] = str(pos.reason)
        if source.value != "gnss":
            rec["time_source"] = str(source)
        return rec

    def position_batch(self, records: Sequence[Mapping[str, Any]], *, historical: bool) -> Message:
        first = records[0]
        payload: dict[str, Any] = {
            "schema": f"pos/{SCHEMA_VERSION}",
            "device_id": self.identity.device_id,
            "boot_id": self.identity.boot_id,
            "seq": first["seq"],
            "seq_last": records[-1]["seq"],
            "ts": first["ts"],
            "time_source": first.get("time_source", "gnss"),
            "historical": historical,
            "count": len(records),
            "records": list(records),
        }
        return Message(self.identity.topic("pos"), payload, Lane.POSITION)

    def event(self, event: Event) -> Message:
        payload = self.envelope("event", event.ts_mono)
        payload["type"] = str(event.type)
        if event.lat is not None and event.lon is not None:
            payload["lat"] = round(event.lat, 7)
            payload["lon"] = round(event.lon, 7)
        payload["data"] = dict(event.data)
        if event.evidence:
            payload["evidence"] = [dict(e) for e in event.evidence]
        return Message(self.identity.topic(f"event/{event.type}"), payload, Lane.EVENT)
