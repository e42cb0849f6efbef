"""The contract document against the code: its decoder, its examples, its topic table, and the
event schema against what the detectors really emit."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.contract import load_schema, problems, schema_names, topic_role
from agent.encoder import Encoder, Identity, batch_records
from agent.events import EventType
from agent.replay import replay_lines
from agent.sequence import SequenceCounter
from bench.bench_wire import drive_records
from bench.score_events import scenario_config
from simulator.capture import CaptureWriter
from simulator.model import VehicleModel
from simulator.nmea import Talker
from simulator.scenario import bundled_names, load_scenario
from tests.contract import documented_event_types, validate

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


class _NoClock:
    def utc(self, ts_mono: float) -> object:
        raise AssertionError("not used")


@pytest.mark.parametrize("interval_s", [1.0, 10.0])
def test_the_documented_decoder_reads_what_the_device_sends(
    tmp_path: Path, interval_s: float
) -> None:
    (code,) = blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the document's own example
    enc = Encoder(
        Identity("van-0042", "boot"),
        SequenceCounter(tmp_path / "seq"),
        _NoClock(),  # type: ignore[arg-type]
        position_encoding="zlib",
    )
    records = drive_records(250, first_seq=77, interval_s=interval_s)
    records[3].pop("alt_m")
    records[4]["time_source"] = "system"
    records[5]["fix"] = "estimated"
    for i in range(0, 250, 100):
        payload = enc.position_batch(records[i : i + 100], historical=True).payload
        assert payload["encoding"] == "zlib-columns-v1"
        assert namespace["decode"](payload) == records[i : i + 100]
        assert namespace["decode"](payload) == batch_records(payload)
        # And the payload survives the wire as JSON.
        assert problems("fleet/v1/van-0042/pos", json.loads(json.dumps(payload))) == []


def test_complete_examples_in_the_document_are_valid() -> None:
    checked = 0
    for text in blocks("json"):
        if "..." in text:
            continue  # abbreviated examples
        payload = json.loads(text)
        kind = payload["schema"].split("/")[0]
        topic = f"fleet/v1/{payload['device_id']}/" + (
            f"event/{payload['type']}" if kind == "event" else kind
        )
        assert problems(topic, payload) == [], text
        checked += 1
    assert checked >= 1


def test_every_documented_topic_has_a_schema() -> None:
    table = re.findall(r"^\| `([a-z/{}]+)` \| (?:device|->)", DOC.read_text(), flags=re.M)
    assert len(table) == 9
    names = set(schema_names())
    documented = set()
    for topic in table:
        row = next(
            line for line in DOC.read_text().splitlines() if line.startswith(f"| `{topic}` |")
        )
        schema = re.findall(r"\| `([a-z_{}]+)` \|", row)[-1]
        if schema == "cmd_{name}":
            assert any(n.startswith("cmd_") and n != "cmd_result" for n in names)
            documented |= {n for n in names if n.startswith("cmd_") and n != "cmd_result"}
        else:
            assert schema in names, topic
            assert load_schema(schema)["$id"].endswith(f"/{schema}.json")
            documented.add(schema)
        # The validator finds the same schema for the topic as the table names.
        concrete = topic.replace("{type}", "trip_end").replace("{name}", "ping")
        role = topic_role(f"fleet/v1/van-0042/{concrete}")
        assert role is not None, topic
        assert role.schema == schema.replace("{name}", "ping"), topic
    assert documented == names, "a shipped schema is missing from the topic table"


def _bundled_drives() -> list[tuple[str, dict[str, Any]]]:
    """(topic, payload as it goes on the wire) of everything each bundled scenario publishes."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name in bundled_names():
        scenario = load_scenario(name)
        writer = CaptureWriter(VehicleModel(scenario), scenario.seed, 1.0, Talker.GP, "v1.5")
        lines = [json.dumps(writer.header())] + [json.dumps(r) for r in writer.records()]
        cfg, fences = scenario_config(scenario)
        for m in replay_lines(lines, cfg, source=name, geofences=fences):
            out.append((m.topic, json.loads(json.dumps(m.payload))))
    return out


@pytest.fixture(scope="module")
def bundled() -> list[tuple[str, dict[str, Any]]]:
    return _bundled_drives()


def _required_data_keys(event_type: str) -> set[str]:
    """The data keys the event schema requires for one type (its if/then rules)."""
    keys: set[str] = set()
    for rule in load_schema("event").get("allOf", []):
        if event_type in rule["if"]["properties"]["type"]["enum"]:
            keys |= set(rule["then"]["properties"]["data"]["required"])
    return keys


def test_the_schema_lists_exactly_the_event_types_the_agent_has() -> None:
    assert documented_event_types() == {t.value for t in EventType}
    # Every known type with data has its keys required (start events carry none).
    bare = {EventType.TRIP_START, EventType.IDLE_START, EventType.STOP_START}
    assert {t for t in EventType if not _required_data_keys(t.value)} == bare


def test_every_event_the_detectors_emit_has_its_documented_data_keys(
    bundled: list[tuple[str, dict[str, Any]]],
) -> None:
    events = [(topic, p) for topic, p in bundled if "/event/" in topic]
    for topic, payload in bundled:
        validate(topic, payload)
    # The bundled scenarios exercise every event type, so every rule above met a real event.
    assert {p["type"] for _, p in events} == documented_event_types()
    for topic, payload in events:
        required = _required_data_keys(payload["type"])
        assert required <= set(payload["data"]), (payload["type"], payload["data"])
        for key in required:  # and the schema really insists on each of them
            broken = copy.deepcopy(payload)
            del broken["data"][key]
            assert any(key in p for p in problems(topic, broken)), (payload["type"], key)


def test_a_new_event_type_does_not_break_a_backend_validating_with_the_schema() -> None:
    # A device a minor version ahead may send a type this schema does not list: the compatibility
    # policy says consumers pass it through, so the shipped schema must accept it.
    payload = {
        "schema": "event/1", "device_id": "van-0042", "boot_id": "b", "seq": 9,
        "ts": "2026-11-20T08:00:02.400Z", "time_source": "gnss", "type": "door_open",
        "data": {"door": "rear", "anything_new": [1, 2]},
    }
    assert "door_open" not in documented_event_types()
    assert problems("fleet/v1/van-0042/event/door_open", payload) == []
    # ... while a known type still has to carry its keys, and a type is never free text.
    assert problems("fleet/v1/van-0042/event/stop_end", {**payload, "type": "stop_end"})
    assert problems("fleet/v1/van-0042/event/Door Open", {**payload, "type": "Door Open"})


def test_our_own_tests_refuse_an_undocumented_event_type() -> None:
    payload = {
        "schema": "event/1", "device_id": "van-0042", "boot_id": "b", "seq": 9,
        "ts": "2026-11-20T08:00:02.400Z", "time_source": "gnss", "type": "door_open",
        "data": {},
    }
    with pytest.raises(AssertionError, match="door_open"):
        validate("fleet/v1/van-0042/event/door_open", payload)


def test_device_payloads_may_gain_fields_within_v1() -> None:
    """No device-published schema may refuse an unknown field (the compatibility policy)."""
    for name in schema_names():
        if name.startswith("cmd_") and name != "cmd_result":
            assert load_schema(name).get("additionalProperties") is False, name  # requests
            continue
        assert "additionalProperties" not in load_schema(name), name
    result = {
        "schema": "cmd_result/1", "device_id": "van-0042", "boot_id": "b", "seq": 0,
        "ts": "2026-11-20T08:00:02.400Z", "time_source": "system", "command": "ping",
        "id": "p-1", "ok": True, "result": {}, "added_in_1_1": True,
    }
    assert problems("fleet/v1/van-0042/cmd/ping/result", result) == []
