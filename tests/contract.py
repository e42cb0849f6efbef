"""Contract checks for tests: every observed message must match its shipped JSON Schema.

from tests.contract import validate, validate_all
validate(msg.topic, msg.payload)          # raises AssertionError naming every problem
validate_all(listener.messages)           # the same for a whole capture; returns the count
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from agent.contract import problems


class Observed(Protocol):
    """Anything with a topic and a payload (read-only, so frozen dataclasses match)."""

    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


def validate(topic: str, payload: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The decoded payload, after checking it against the schema its topic names."""
    if isinstance(payload, (bytes, str)):
        try:
            decoded = json.loads(payload)
        except ValueError as exc:
            raise AssertionError(f"{topic}: payload is not JSON ({exc})") from None
    else:
        decoded = dict(payload)
    if not isinstance(decoded, dict):
        raise AssertionError(f"{topic}: payload is not a JSON object")
    found = problems(topic, decoded)
    if found:
        raise AssertionError("contract violation:\n  " + "\n  ".join(found[:20]))
    return decoded


def validate_all(messages: Iterable[Observed]) -> int:
    """Validate every message (empty retained clears are skipped); returns how many were checked."""
    n = 0
    for m in messages:
        if m.payload == b"":
            continue
        validate(m.topic, m.payload)
        n += 1
    return n
