"""Contract checks for tests: every observed message must match its shipped JSON Schema.

from tests.contract import validate, validate_all
validate(msg.topic, msg.payload)          # raises AssertionError naming every problem
validate_all(listener.messages)           # the same for a whole capture; returns the count

``tests.listener.Listener`` runs the capture check on everything it received when it is closed,
so a test that observes MQTT traffic fails on a message the contract does not allow, even if it
never calls these itself.

Two things are stricter than what :func:`agent.contract.problems` tells a backend: a topic that
is not a v1 kind fails (a backend should ignore it; our device must not send it), and so does an
event type the schema does not list (backends must pass new types through; our own device must
not emit a type before the schema and docs/mqtt.md list it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Protocol

from agent.contract import load_schema, problems, topic_role


class Observed(Protocol):
    """Anything with a topic and a payload (read-only, so frozen dataclasses match)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


@cache
def documented_event_types() -> frozenset[str]:
    """The event types the shipped schema lists (its ``type`` is open for backends)."""
    return frozenset(load_schema("event")["properties"]["type"]["examples"])


def is_command_request(topic: str) -> bool:
    """``{prefix}/{device_id}/cmd/{name}``: sent *to* the device, by a test playing the backend.

    Tests send malformed requests on purpose (the device must answer them with an error, and
    that answer is checked); a request is the test's input, not something the device said.
    """
    role = topic_role(topic)
    return role is not None and role.schema.startswith("cmd_") and role.schema != "cmd_result"


def _decode(topic: str, payload: bytes | str | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(payload, (bytes, str)):
        try:
            decoded = json.loads(payload)
        except ValueError as exc:
            return {}, f"{topic}: payload is not JSON ({exc})"
    else:
        decoded = dict(payload)
    if not isinstance(decoded, dict):
        return {}, f"{topic}: payload is not a JSON object"
    return decoded, ""


def message_problems(topic: str, payload: bytes | str | Mapping[str, Any]) -> list[str]:
    """Everything wrong with one message the device sent; an empty list means it is valid."""
    decoded, error = _decode(topic, payload)
    if error:
        return [error]
    found = problems(topic, decoded)
    role = topic_role(topic)
    if role is not None and role.schema == "event" and not found:
        etype = decoded.get("type")
        if etype not in documented_event_types():
            found.append(
                f"{topic}: event type {etype!r} is not listed in agent/schemas/event.json"
                " (type.examples) and docs/mqtt.md"
            )
    return found


def validate(topic: str, payload: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The decoded payload, after checking it against the schema its topic names."""
    found = message_problems(topic, payload)
    if found:
        raise AssertionError("contract violation:\n  " + "\n  ".join(found[:20]))
    decoded, _ = _decode(topic, payload)
    return decoded


def capture_problems(messages: Iterable[Observed]) -> tuple[int, list[str]]:
    """(how many messages were checked, every problem found) for a whole capture.

    Skipped: empty payloads (clearing a retained message is any client's right) and command
    requests (see :func:`is_command_request`). Everything else must be a valid v1 message.
    """
    checked = 0
    found: list[str] = []
    for m in messages:
        if m.payload == b"" or is_command_request(m.topic):
            continue
        found += message_problems(m.topic, m.payload)
        checked += 1
    return checked, found


def validate_all(messages: Iterable[Observed]) -> int:
    """Validate every message of a capture (see :func:`capture_problems`); returns the count."""
    checked, found = capture_problems(messages)
    if found:
        raise AssertionError(
            f"contract violation: {len(found)} problems in {checked} messages:\n  "
            + "\n  ".join(found[:20])
        )
    return checked
