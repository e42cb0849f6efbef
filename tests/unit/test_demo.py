"""The demo's live view: one readable line for every kind of message on the broker.

Every input here is a valid v1 message (checked against its schema first), built by the
agent's own encoder where it has one, so the lines are what `make demo` prints for real traffic.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from agent.clock import VirtualClock
from agent.demo import describe
from agent.encoder import Encoder, Identity
from agent.events import Event, EventType
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase
from tests.contract import is_command_request, validate

EPOCH = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
BASE = "fleet/v1/demo-van-01"
ENVELOPE = {
    "device_id": "demo-van-01",
    "boot_id": "boot-1",
    "ts": "2026-03-02T08:00:05.000Z",
    "time_source": "gnss",
}


def _encoder(tmp_path: Path, encoding: str = "json") -> Encoder:
    return Encoder(
        Identity("demo-van-01", "boot-1"),
        SequenceCounter(tmp_path / "seq"),
        TimeBase(VirtualClock(0.0, EPOCH)),
        position_encoding=encoding,
    )


def _records(first_seq: int) -> list[dict[str, Any]]:
    return [
        {"seq": first_seq, "ts": "2026-03-02T08:00:00.000Z", "lat": 52.52, "lon": 13.4,
         "speed_kmh": 31.6, "reason": "interval"},
        {"seq": first_seq + 1, "ts": "2026-03-02T08:00:01.000Z", "lat": 52.5201234,
         "lon": 13.4005678, "speed_kmh": 32.4, "course_deg": 90.0, "reason": "every_fix"},
    ]


def _line(topic: str, payload: dict[str, Any]) -> str:
    if not is_command_request(topic):
        validate(topic, payload)  # the demo is shown real traffic only
    return describe(topic, payload)


@pytest.mark.parametrize("encoding", ["json", "zlib"])
def test_a_position_batch_shows_its_count_seqs_and_last_position(
    tmp_path: Path, encoding: str
) -> None:
    enc = _encoder(tmp_path, encoding)
    msg = enc.position_batch(_records(41), historical=encoding == "zlib")
    payload = dict(msg.payload)
    assert ("data" in payload) == (encoding == "zlib")
    suffix = "  zlib  (history)" if encoding == "zlib" else ""
    assert _line(msg.topic, payload) == (
        "08:00:00  pos       2 records  seq 41-42  last 52.52012,13.40057  32 km/h" + suffix
    )


def test_an_event_shows_its_type_seq_and_first_data_keys(tmp_path: Path) -> None:
    data = {"peak_mps2": -4.2, "duration_s": 0.7, "speed_kmh": 48.0, "severity": 2}
    msg = _encoder(tmp_path).event(Event(EventType.HARSH_BRAKE, 2.5, 52.52, 13.4, data))
    assert _line(msg.topic, dict(msg.payload)) == (
        "08:00:02  EVENT   harsh_brake      seq 1  peak_mps2=-4.2, duration_s=0.7,"
        " speed_kmh=48.0, severity=2"
    )


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"online": True, "parked": False, "vin": "WF0EXXTTGEMA12345"},
         "08:00:05  state   ONLINE  v0.1.0  VIN WF0EXXTTGEMA12345  ignition on"),
        ({"online": True}, "08:00:05  state   ONLINE  v0.1.0  VIN -"),
        ({"online": False, "parked": True}, "08:00:05  state   OFFLINE  v0.1.0  VIN -  parked"),
    ],
)
def test_state_shows_the_link_the_vin_and_the_ignition(
    fields: dict[str, Any], expected: str
) -> None:
    payload = {"schema": "state/1", **ENVELOPE, "seq": 7, "version": "0.1.0", **fields}
    assert _line(f"{BASE}/state", payload) == expected


def test_live_shows_the_newest_position() -> None:
    payload = {"schema": "live/1", **ENVELOPE, "seq": 12, "lat": 51.34, "lon": 12.37001,
               "speed_kmh": 0.4}
    assert _line(f"{BASE}/live", payload) == "08:00:05  live    51.34000,12.37001  0 km/h  seq 12"


def test_health_shows_the_spool_depth_and_the_broker_link() -> None:
    payload = {"schema": "health/1", **ENVELOPE, "seq": 3, "spool": {"depth": 4},
               "mqtt": {"connected": True, "reconnects": 0}}
    assert _line(f"{BASE}/health", payload) == "08:00:05  health  spool depth 4  broker up  seq 3"


def test_engine_shows_fuel_idle_and_levels() -> None:
    data = {"window_s": 300.0, "readings": 940, "fuel_used_l": 0.312, "idle_s": 45.0,
            "rpm_avg": 1692.8, "coolant_c": 88.0, "fuel_level_pct": 53.73}
    payload = {"schema": "engine/1", **ENVELOPE, "seq": 9, "data": data}
    assert _line(f"{BASE}/engine", payload) == (
        "08:00:05  engine  300 s  fuel 0.312 L  idle 45 s  rpm 1692.8  coolant 88 C"
        "  tank 53.73 %  seq 9"
    )


def test_a_command_and_its_results_show_the_name_id_and_outcome() -> None:
    assert _line(f"{BASE}/cmd/ping", {"id": "p-1"}) == "          cmd     ping (id p-1)"
    result = {"schema": "cmd_result/1", **ENVELOPE, "seq": 5, "command": "locate", "id": "l-1"}
    ok = {**result, "ok": True, "result": {"lat": 52.5}}
    assert _line(f"{BASE}/cmd/locate/result", ok) == "08:00:05  result  locate (id l-1)  ok"
    failed = {**result, "ok": False, "error": "no GNSS fix yet"}
    assert _line(f"{BASE}/cmd/locate/result", failed) == (
        "08:00:05  result  locate (id l-1)  FAILED: no GNSS fix yet"
    )


def test_the_technician_check_publish_is_named() -> None:
    payload = {"check": True, "device_id": "demo-van-01", "ts": "2026-03-02T08:00:05+00:00"}
    assert _line(f"{BASE}/check", payload) == "08:00:05  check   technician self-test publish"


def test_anything_else_is_shown_by_topic_not_dropped() -> None:
    line = describe("somewhere/else", {"hello": "world"})
    assert line == '          other   somewhere/else: {"hello": "world"}'


def test_an_unreadable_batch_says_so_instead_of_failing() -> None:
    payload = {"schema": "pos/1", **ENVELOPE, "seq": 1, "seq_last": 2, "historical": False,
               "count": 2, "encoding": "zlib-columns-v1", "data": "bm90IHpsaWI="}
    assert describe(f"{BASE}/pos", payload) == (
        "08:00:05  pos       2 records  seq 1-2  (records unreadable)  zlib"
    )
