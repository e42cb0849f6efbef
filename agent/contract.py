"""Contract: the v1 MQTT payload schemas shipped with the package, and which topic uses which.

Validation needs ``jsonschema`` (a test and tooling dependency, not a runtime one), so it is
imported only when :func:`problems` is called.
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from agent.encoder import ZLIB_COLUMNS, batch_records

# ``check`` is the technician self-test's test publish: not a record, but on the device's tree.
_PLAIN = frozenset({"state", "live", "pos", "engine", "health", "check"})


@dataclass(frozen=True, slots=True)
class TopicRole:
    """What a topic is: its schema name, the device it belongs to, and its variable level."""

    schema: str
    device_id: str
    name: str = ""  # event type or command name


def topic_role(topic: str) -> TopicRole | None:
    """Parse ``{prefix}/{device_id}/{suffix}`` from the right (prefixes may contain '/')."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[-1] in _PLAIN:
        return TopicRole(parts[-1], parts[-2])
    if len(parts) >= 4 and parts[-2] == "event":
        return TopicRole("event", parts[-3], parts[-1])
    if len(parts) >= 5 and parts[-3] == "cmd" and parts[-1] == "result":
        return TopicRole("cmd_result", parts[-4], parts[-2])
    if len(parts) >= 4 and parts[-2] == "cmd":
        return TopicRole(f"cmd_{parts[-1]}", parts[-3], parts[-1])
    return None


def schema_names() -> list[str]:
    return sorted(
        p.name.removesuffix(".json")
        for p in resources.files("agent").joinpath("schemas").iterdir()
        if p.name.endswith(".json")
    )


@cache
def _schema_text(name: str) -> str:
    return resources.files("agent").joinpath("schemas").joinpath(f"{name}.json").read_text()


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of one schema (``state``, ``pos``, ``event``, ``cmd_result``...)."""
    schema: dict[str, Any] = json.loads(_schema_text(name))
    return schema


def _jsonschema() -> Any:
    return importlib.import_module("jsonschema")


@cache
def _validator(name: str) -> Any:
    """One compiled validator per schema: tests check every message they observe, thousands in
    a fault soak, and building a validator costs far more than using one."""
    jsonschema = _jsonschema()
    return jsonschema.Draft202012Validator(
        load_schema(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@cache
def _record_validator() -> Any:
    schema = load_schema("pos")
    record_schema = {**schema["$defs"]["record"], "$schema": schema["$schema"]}
    return _jsonschema().Draft202012Validator(record_schema)


def problems(topic: str, payload: Mapping[str, Any]) -> list[str]:
    """Everything wrong with ``payload`` on ``topic``; an empty list means it is valid.

    Beyond the schema: the payload's ``device_id`` must match the topic, an event's ``type``
    its topic level, and a compressed position batch must decode to valid records.
    """
    role = topic_role(topic)
    if role is None:
        return [f"{topic}: not a v1 topic"]
    try:
        validator = _validator(role.schema)
    except FileNotFoundError:
        return [f"{topic}: no schema named {role.schema}"]
    out = [
        f"{topic}: {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(payload)
    ]
    if "device_id" in payload and payload["device_id"] != role.device_id:
        out.append(f"{topic}: device_id {payload['device_id']!r} is not the topic's")
    if role.schema == "event" and payload.get("type") != role.name:
        out.append(f"{topic}: type {payload.get('type')!r} is not the topic's")
    if role.schema == "pos" and not out:
        out.extend(_batch_problems(topic, payload))
    return out


def _batch_problems(topic: str, payload: Mapping[str, Any]) -> list[str]:
    try:
        records = batch_records(payload)
    except ValueError as exc:
        return [f"{topic}: {exc}"]
    out: list[str] = []
    if payload.get("encoding") == ZLIB_COLUMNS:
        validator = _record_validator()
        for i, rec in enumerate(records):
            out += [f"{topic}: data[{i}]: {e.message}" for e in validator.iter_errors(rec)]
    seqs = [r.get("seq") for r in records]
    if len(records) != payload.get("count"):
        out.append(f"{topic}: count {payload.get('count')} but {len(records)} records")
    if seqs and (seqs[0] != payload.get("seq") or seqs[-1] != payload.get("seq_last")):
        out.append(f"{topic}: seq/seq_last do not match the first and last record")
    if any(b <= a for a, b in itertools.pairwise(seqs)):  # type: ignore[operator]
        out.append(f"{topic}: record seq not increasing")
    return out
