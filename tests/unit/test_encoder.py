"""Encoder: envelopes, JSON and zlib-columns position batches, and the shipped schemas."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import VirtualClock
from agent.contract import load_schema, problems, schema_names, topic_role
from agent.encoder import (
    ZLIB_COLUMNS,
    Encoder,
    Identity,
    batch_records,
    decode_columns,
    encode_columns,
)
from agent.events import Event, EventType
from agent.reporter import ReportReason, position_from_fix
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase, iso
from drivers.samples import FixMode, FixQuality, GNSSFix

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def encoder(tmp_path: Path, encoding: str = "json") -> Encoder:
    clock = VirtualClock(0.0, EPOCH)
    return Encoder(
        Identity("van-7", "boot-1"),
        SequenceCounter(tmp_path / "seq"),
        TimeBase(clock),
        position_encoding=encoding,
    )


def optional(s: st.SearchStrategy[float | int]) -> st.SearchStrategy[float | int | None]:
    return st.one_of(st.none(), s)


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, object]]:
    n = draw(st.integers(1, 25))
    seq = draw(st.integers(1, 2**40))
    ms = draw(st.integers(0, 4_000_000_000_000))
    out: list[dict[str, object]] = []
    for _ in range(n):
        seq += draw(st.integers(1, 3))
        ms += draw(st.integers(0, 120_000))
        rec: dict[str, object] = {
            "seq": seq,
            "ts": iso(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)),
            "lat": round(draw(st.floats(-90, 90)), 7),
            "lon": round(draw(st.floats(-180, 180)), 7),
        }
        for key, value in (
            ("alt_m", optional(st.floats(-500, 9000).map(lambda v: round(v, 1)))),
            ("speed_kmh", optional(st.floats(0, 300).map(lambda v: round(v, 1)))),
            ("course_deg", optional(st.floats(0, 359.9).map(lambda v: round(v, 1)))),
            ("hdop", optional(st.floats(0, 99).map(lambda v: round(v, 1)))),
            ("sats", optional(st.integers(0, 40))),
        ):
            v = draw(value)
            if v is not None:
                rec[key] = v
        rec["reason"] = draw(st.sampled_from(["interval", "distance", "heading", "every_fix"]))
        if draw(st.booleans()):
            rec["time_source"] = "system"
        if draw(st.integers(0, 3)) == 0:
            rec["fix"] = "estimated"
        out.append(rec)
    return out


@settings(max_examples=40, deadline=None)
@given(records())
def test_zlib_columns_round_trip_exactly(recs: list[dict[str, object]]) -> None:
    assert decode_columns(encode_columns(recs)) == recs


@pytest.mark.parametrize(
    "data",
    [
        "not base64!",
        "",
        "eJzLSM3JyQcABiwCFQ==",  # zlib of "hello": not columns
        "AAAA",
    ],
)
def test_malformed_columns_give_a_clear_error(data: str) -> None:
    with pytest.raises(ValueError, match=ZLIB_COLUMNS):
        decode_columns(data)


def batch_of(enc: Encoder, n: int) -> list[dict[str, object]]:
    recs = []
    for i in range(n):
        recs.append(
            {
                "seq": enc.seq.take(),
                "ts": iso(EPOCH + dt.timedelta(seconds=i)),
                "lat": round(52.5 + i * 1e-4, 7),
                "lon": round(13.4 - i * 2e-4, 7),
                "alt_m": 34.5,
                "speed_kmh": 36.0,
                "course_deg": 271.3,
                "hdop": 0.9,
                "sats": 10,
                "reason": "interval",
            }
        )
    return recs


@pytest.mark.parametrize("encoding", ["json", "zlib"])
def test_position_batches_match_the_schema_in_both_encodings(tmp_path: Path, encoding: str) -> None:
    enc = encoder(tmp_path, encoding)
    recs = batch_of(enc, 100)
    msg = enc.position_batch(recs, historical=False)
    assert problems(msg.topic, msg.payload) == []
    assert batch_records(msg.payload) == recs
    assert msg.payload["seq"] == recs[0]["seq"] and msg.payload["seq_last"] == recs[-1]["seq"]
    assert ("encoding" in msg.payload) is (encoding == "zlib")


@pytest.mark.parametrize("encoding", ["json", "zlib"])
def test_a_dead_reckoning_fix_is_marked_estimated_on_the_wire(
    tmp_path: Path, encoding: str
) -> None:
    enc = encoder(tmp_path, encoding)
    fixes = [
        GNSSFix(float(k), EPOCH + dt.timedelta(seconds=k), 52.5, 13.4 + k * 1e-4, 30.0, 10.0,
                90.0, FixMode.FIX_3D, quality, 9, 0.9)
        for k, quality in enumerate([FixQuality.GPS, FixQuality.ESTIMATED, FixQuality.DGPS])
    ]
    recs = [
        enc.position_record(position_from_fix(f, ReportReason.EVERY_FIX)) for f in fixes
    ]
    assert [r.get("fix") for r in recs] == [None, "estimated", None]
    msg = enc.position_batch(recs, historical=False)
    assert ("encoding" in msg.payload) is (encoding == "zlib")
    assert problems(msg.topic, msg.payload) == []
    assert batch_records(msg.payload) == recs
    live = {**recs[1], "schema": "live/1", "device_id": "van-7", "boot_id": "boot-1",
            "time_source": "gnss"}
    assert problems("fleet/v1/van-7/live", live) == []
    # The field has one value: anything else is a contract violation a backend can catch.
    assert problems("fleet/v1/van-7/live", {**live, "fix": "measured"}) != []


def test_compressed_batch_is_much_smaller(tmp_path: Path) -> None:
    enc = encoder(tmp_path, "zlib")
    recs = batch_of(enc, 100)
    plain = len(json.dumps(encoder(tmp_path / "j").position_batch(recs, historical=True).payload))
    packed = len(json.dumps(enc.position_batch(recs, historical=True).payload))
    assert packed * 5 < plain


def test_unknown_record_fields_fall_back_to_json(tmp_path: Path) -> None:
    enc = encoder(tmp_path, "zlib")
    recs = batch_of(enc, 3)
    recs[1]["odometer_km"] = 12.5
    payload = enc.position_batch(recs, historical=False).payload
    assert "encoding" not in payload and payload["records"][1]["odometer_km"] == 12.5


def test_event_payload_matches_the_schema(tmp_path: Path) -> None:
    enc = encoder(tmp_path)
    ev = Event(
        EventType.HARSH_BRAKE,
        12.0,
        52.5,
        13.4,
        {"peak_mps2": -4.2, "duration_s": 0.7, "speed_kmh": 48.0, "severity": 2},
        ({"t_rel_s": -0.5, "speed_kmh": 50.0},),
    )
    msg = enc.event(ev)
    assert msg.topic == "fleet/v1/van-7/event/harsh_brake"
    assert problems(msg.topic, msg.payload) == []
    bad = {**msg.payload, "data": {"duration_s": 0.7}}
    assert any("severity" in p for p in problems(msg.topic, bad))
    wrong_topic = problems("fleet/v1/van-7/event/harsh_accel", msg.payload)
    assert any("type" in p for p in wrong_topic)


def test_topics_map_to_schemas() -> None:
    assert topic_role("fleet/v1/van-7/pos") is not None
    role = topic_role("acme/eu/fleet/v1/van-7/cmd/ping/result")
    assert role is not None and (role.schema, role.device_id, role.name) == (
        "cmd_result",
        "van-7",
        "ping",
    )
    assert topic_role("fleet/v1/van-7/whatever") is None
    for name in ("state", "live", "pos", "event", "engine", "health", "cmd_result"):
        assert name in schema_names()
        schema = load_schema(name)
        assert schema["$schema"].endswith("2020-12/schema")


def test_payload_for_another_device_is_flagged(tmp_path: Path) -> None:
    enc = encoder(tmp_path)
    msg = enc.position_batch(batch_of(enc, 2), historical=False)
    assert any("device_id" in p for p in problems("fleet/v1/van-8/pos", msg.payload))
