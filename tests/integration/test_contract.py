"""The contract document against the code: its decoder, its examples, its topic table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent.contract import load_schema, problems, schema_names
from agent.encoder import Encoder, Identity, batch_records
from agent.sequence import SequenceCounter
from bench.bench_wire import drive_records

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
    assert len(table) == 8
    names = set(schema_names())
    for topic in table:
        row = next(
            line for line in DOC.read_text().splitlines() if line.startswith(f"| `{topic}` |")
        )
        schema = re.findall(r"\| `([a-z_{}]+)` \|", row)[-1]
        if schema == "cmd_{name}":
            assert any(n.startswith("cmd_") and n != "cmd_result" for n in names)
        else:
            assert schema in names, topic
            assert load_schema(schema)["$id"].endswith(f"/{schema}.json")
