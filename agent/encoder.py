"""Encoder: turns positions and events into MQTT messages with the v1 envelope."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent.engine import EngineSummary
from agent.events import Event
from agent.reporter import Position
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase, iso

SCHEMA_VERSION = 1
ZLIB_COLUMNS = "zlib-columns-v1"
POSITION_ENCODINGS = ("json", "zlib")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
# Record field -> (column name, scale to an integer, delta-encoded). Slowly changing values are
# delta-encoded so zlib sees runs of small repeating numbers.
_COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("lat", "lat_e7", 10_000_000, True),
    ("lon", "lon_e7", 10_000_000, True),
    ("alt_m", "alt_dm", 10, True),
    ("speed_kmh", "speed_dkmh", 10, True),
    ("course_deg", "course_ddeg", 10, True),
    ("hdop", "hdop_d", 10, False),
    ("sats", "sats", 1, False),
)
# Text fields, one plain column each: ``reason`` always, the others only when some record of the
# batch has one (they are rare).
_TEXT_COLUMNS = ("reason", "time_source", "fix")
_RECORD_KEYS = frozenset({"seq", "ts", *_TEXT_COLUMNS, *(field for field, *_ in _COLUMNS)})


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
    """Builds v1 payloads; ``position_encoding`` is ``json`` or ``zlib`` (see docs/mqtt.md)."""

    identity: Identity
    seq: SequenceCounter
    timebase: TimeBase
    _fields: dict[str, Any] = field(default_factory=dict)
    position_encoding: str = "json"

    def envelope(self, kind: str, ts_mono: float, *, durable: bool = True) -> dict[str, Any]:
        """The fields every payload carries. A durable record takes the next ``seq``; anything
        else (a command result) carries the newest one handed out, which orders it among the
        records without leaving a gap in them."""
        ts, source = self.timebase.utc(ts_mono)
        return {
            "schema": f"{kind}/{SCHEMA_VERSION}",
            "device_id": self.identity.device_id,
            "boot_id": self.identity.boot_id,
            "seq": self.seq.take() if durable else self.seq.last_value,
            "ts": iso(ts),
            "time_source": str(source),
        }

    def position_record(self, pos: Position, *, seq: int | None = None) -> dict[str, Any]:
        """A position record; it takes the next ``seq`` unless one is given (for a copy that
        is not a durable record, such as a ``locate`` answer, which must not use one up)."""
        ts, source = self.timebase.utc(pos.ts_mono)
        rec: dict[str, Any] = {
            "seq": self.seq.take() if seq is None else seq,
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
        if pos.estimated:
            rec["fix"] = "estimated"
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
        }
        if self.position_encoding == "zlib" and all(_RECORD_KEYS.issuperset(r) for r in records):
            payload["encoding"] = ZLIB_COLUMNS
            payload["data"] = encode_columns(records)
        else:
            payload["records"] = list(records)
        return Message(self.identity.topic("pos"), payload, Lane.POSITION)

    def engine(self, summary: EngineSummary) -> Message:
        payload = self.envelope("engine", summary.ts_mono)
        payload["data"] = dict(summary.data)
        return Message(self.identity.topic("engine"), payload, Lane.ENGINE)

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


def _delta(values: list[int | None]) -> list[int | None]:
    out: list[int | None] = []
    prev = 0
    for v in values:
        if v is None:
            out.append(None)
        else:
            out.append(v - prev)
            prev = v
    return out


def _undelta(values: list[int | None]) -> list[int | None]:
    out: list[int | None] = []
    prev = 0
    for v in values:
        if v is None:
            out.append(None)
        else:
            prev += v
            out.append(prev)
    return out


def _epoch_ms(ts: str) -> int:
    return (dt.datetime.fromisoformat(ts) - _EPOCH) // _MS


def encode_columns(records: Sequence[Mapping[str, Any]]) -> str:
    """Position records as delta-encoded integer columns, compact JSON, zlib, base64."""
    cols: dict[str, Any] = {
        "n": len(records),
        "seq": _delta([int(r["seq"]) for r in records]),
        "ts_ms": _delta([_epoch_ms(str(r["ts"])) for r in records]),
    }
    for name, col, scale, delta in _COLUMNS:
        ints = [None if r.get(name) is None else round(float(r[name]) * scale) for r in records]
        if any(v is not None for v in ints):
            cols[col] = _delta(ints) if delta else ints
    for name in _TEXT_COLUMNS:
        if name == "reason" or any(name in r for r in records):
            cols[name] = [r.get(name) for r in records]
    raw = json.dumps(cols, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def decode_columns(data: str) -> list[dict[str, Any]]:
    """The records of a ``zlib-columns-v1`` batch; ValueError if ``data`` is malformed."""
    try:
        cols = json.loads(zlib.decompress(base64.b64decode(data, validate=True)))
        n = int(cols["n"])
        seqs = _undelta(cols["seq"])
        times = _undelta(cols["ts_ms"])
        if len(seqs) != n or len(times) != n:
            raise ValueError("column length differs from n")
        records: list[dict[str, Any]] = []
        columns: list[tuple[str, int, list[int | None]]] = []
        for name, col, scale, delta in _COLUMNS:
            if col in cols:
                values = _undelta(cols[col]) if delta else list(cols[col])
                if len(values) != n:
                    raise ValueError(f"column {col} has {len(values)} values, not {n}")
                columns.append((name, scale, values))
        texts = [(name, cols.get(name, [None] * n)) for name in _TEXT_COLUMNS]
        if any(len(values) != n for _, values in texts):
            raise ValueError("column length differs from n")
        for i in range(n):
            ms = times[i]
            seq = seqs[i]
            if ms is None or seq is None:
                raise ValueError("null seq or ts")
            rec: dict[str, Any] = {"seq": seq, "ts": iso(_EPOCH + ms * _MS)}
            for name, scale, values in columns:
                v = values[i]
                if v is not None:
                    rec[name] = v if scale == 1 else round(v / scale, len(str(scale)) - 1)
            for name, values in texts:
                if values[i] is not None:
                    rec[name] = values[i]
            records.append(rec)
    except (ValueError, TypeError, KeyError, IndexError, zlib.error) as exc:
        raise ValueError(f"malformed {ZLIB_COLUMNS} data: {exc}") from exc
    return records


def batch_records(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The position records of a ``pos`` payload in either encoding."""
    if payload.get("encoding") == ZLIB_COLUMNS:
        return decode_columns(str(payload["data"]))
    if "encoding" in payload:
        raise ValueError(f"unknown position encoding {payload['encoding']!r}")
    return [dict(r) for r in payload["records"]]
