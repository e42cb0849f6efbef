"""Validator: a strict checker for the small subset of JSON Schema our command schemas use.

jsonschema is a development dependency only; the daemon must not need it on a van. This
validator understands exactly the keywords in :data:`KEYWORDS` and refuses, when a schema is
loaded, any keyword it does not understand, so a schema can never be silently half-applied.
Tests check that it agrees with the real jsonschema on valid and invalid documents.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.errors import AgentError

KEYWORDS = frozenset(
    {
        "$schema",
        "$id",
        "title",
        "description",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


class SchemaError(AgentError, ValueError):
    """A schema uses something this validator does not implement."""


class ValidationError(AgentError, ValueError):
    """A document does not match its schema; the message names where and why."""


class Validator:
    """One loaded schema; :meth:`validate` raises :class:`ValidationError` on the first problem."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        _check_schema(schema, "#")
        self.schema = schema
        self._patterns: dict[str, re.Pattern[str]] = {}

    @classmethod
    def from_file(cls, path: Path) -> Validator:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def validate(self, doc: Any) -> None:
        self._validate(doc, self.schema, "$")

    def _validate(self, doc: Any, schema: Mapping[str, Any] | bool, where: str) -> None:
        if schema is True:
            return
        if schema is False:
            raise ValidationError(f"{where}: not allowed")
        assert isinstance(schema, Mapping)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(doc, t) for t in types):
                raise ValidationError(f"{where}: expected {' or '.join(types)}, got {_kind(doc)}")
        if "enum" in schema and not any(_equal(doc, v) for v in schema["enum"]):
            raise ValidationError(f"{where}: must be one of {json.dumps(schema['enum'])}")
        if "const" in schema and not _equal(doc, schema["const"]):
            raise ValidationError(f"{where}: must be {json.dumps(schema['const'])}")
        if isinstance(doc, dict):
            self._object(doc, schema, where)
        elif isinstance(doc, list):
            self._array(doc, schema, where)
        elif isinstance(doc, str):
            self._string(doc, schema, where)
        elif _is_type(doc, "number"):
            if "minimum" in schema and doc < schema["minimum"]:
                raise ValidationError(f"{where}: must be at least {schema['minimum']}")
            if "maximum" in schema and doc > schema["maximum"]:
                raise ValidationError(f"{where}: must be at most {schema['maximum']}")

    def _object(self, doc: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
        if "minProperties" in schema and len(doc) < schema["minProperties"]:
            raise ValidationError(f"{where}: needs at least {schema['minProperties']} members")
        if "maxProperties" in schema and len(doc) > schema["maxProperties"]:
            raise ValidationError(f"{where}: allows at most {schema['maxProperties']} members")
        for key in schema.get("required", []):
            if key not in doc:
                raise ValidationError(f"{where}: missing required member {key!r}")
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        names = schema.get("propertyNames", True)
        for key in sorted(doc):
            self._validate(key, names, f"{where}: member name {key[:40]!r}")
            if key in props:
                self._validate(doc[key], props[key], f"{where}.{key}")
            elif extra is False:
                raise ValidationError(f"{where}: unknown member {key[:40]!r}")
            else:
                self._validate(doc[key], extra, f"{where}.{key[:40]}")

    def _array(self, doc: list[Any], schema: Mapping[str, Any], where: str) -> None:
        if "minItems" in schema and len(doc) < schema["minItems"]:
            raise ValidationError(f"{where}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(doc) > schema["maxItems"]:
            raise ValidationError(f"{where}: allows at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(doc):
                self._validate(item, schema["items"], f"{where}[{i}]")

    def _string(self, doc: str, schema: Mapping[str, Any], where: str) -> None:
        # JSON Schema counts code points, as len() does.
        if "minLength" in schema and len(doc) < schema["minLength"]:
            raise ValidationError(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(doc) > schema["maxLength"]:
            raise ValidationError(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema:
            pattern = self._patterns.get(schema["pattern"])
            if pattern is None:
                pattern = self._patterns[schema["pattern"]] = re.compile(schema["pattern"])
            # JSON Schema patterns are unanchored (ECMA-262 search semantics). Python's '$' also
            # matches before a final newline, ECMA's does not: a trailing '$' must end the text.
            m = pattern.search(doc)
            if m is None or (schema["pattern"].endswith("$") and m.end() != len(doc)):
                raise ValidationError(f"{where}: does not match {schema['pattern']}")


def _is_type(doc: Any, name: str) -> bool:
    if name == "object":
        return isinstance(doc, dict)
    if name == "array":
        return isinstance(doc, list)
    if name == "string":
        return isinstance(doc, str)
    if name == "boolean":
        return isinstance(doc, bool)
    if name == "null":
        return doc is None
    if isinstance(doc, bool):
        return False
    if name == "integer":
        # As in JSON Schema (and jsonschema), 1.0 is an integer: JSON has one number type.
        return isinstance(doc, int) or (isinstance(doc, float) and doc.is_integer())
    if name == "number":
        return isinstance(doc, int) or (isinstance(doc, float) and math.isfinite(doc))
    return False


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1, unlike Python's.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _kind(doc: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(doc, name):
            return name
    return type(doc).__name__


def _check_schema(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{where}: a schema must be an object or a boolean")
    unknown = sorted(set(schema) - KEYWORDS)
    if unknown:
        raise SchemaError(f"{where}: keyword {unknown[0]!r} is not supported by this validator")
    t = schema.get("type")
    if t is not None:
        for name in t if isinstance(t, list) else [t]:
            if name not in _TYPES:
                raise SchemaError(f"{where}/type: unknown type {name!r}")
    for key in ("properties",):
        for name, sub in schema.get(key, {}).items():
            _check_schema(sub, f"{where}/{key}/{name}")
    for key in ("additionalProperties", "propertyNames", "items"):
        if key in schema:
            _check_schema(schema[key], f"{where}/{key}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            raise SchemaError(f"{where}/pattern: {exc}") from None
