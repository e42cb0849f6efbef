"""Configuration documents: the reference and the example file, rendered from the declarations.

``config/agent.example.toml`` and ``docs/configuration.md`` are generated from the dataclass
declarations in :mod:`agent.config`, and a test fails when either is stale, so the documented
keys, defaults and bounds can never drift from what the loader accepts. Regenerate with
``python -m agent.configdoc``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from agent.config import Config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "agent.example.toml"
REFERENCE = ROOT / "docs" / "configuration.md"

# Values the example shows instead of the defaults (the defaults of these are not deployable).
_EXAMPLE_VALUES: dict[str, Any] = {"device.id": "van-0042"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def _bounds(meta: typing.Mapping[str, Any]) -> str:
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        parts.append(f"{lo} .. {hi}")
    elif lo is not None:
        parts.append(f">= {lo}")
    elif hi is not None:
        parts.append(f"<= {hi}")
    return "; ".join(parts)


def _walk(cls: type[Any], prefix: str = "") -> list[tuple[str, list[dataclasses.Field[Any]], str]]:
    """Sections in declaration order: (dotted name, scalar fields, section description)."""
    hints = typing.get_type_hints(cls)
    scalars: list[dataclasses.Field[Any]] = []
    nested: list[tuple[str, list[dataclasses.Field[Any]], str]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            sub = _walk(tp, f"{prefix}{f.name}.")
            if sub and sub[0][0] == "":
                sub = sub[1:]
            doc = f.metadata.get("doc", "")
            own = _walk_scalars(tp)
            nested.append((prefix + f.name, own, doc))
            nested.extend(s for s in sub if s[0] != prefix + f.name)
        else:
            scalars.append(f)
    return ([(prefix.rstrip("."), scalars, "")] if scalars else []) + nested


def _walk_scalars(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    hints = typing.get_type_hints(cls)
    return [
        f
        for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")
        and not (isinstance(hints[f.name], type) and dataclasses.is_dataclass(hints[f.name]))
    ]


def render_example() -> str:
    lines = [
        "# telematics-agent configuration: every key, with its default and what it accepts.",
        "# Generated from agent/config.py by `python -m agent.configdoc`; do not edit by hand.",
        "# Only [device] id is required; delete any other line to keep its default.",
    ]
    for section, fields, doc in _walk(Config):
        if not fields:
            continue
        lines.append("")
        lines.append(f"[{section}]" + (f"  # {doc}" if doc else ""))
        for f in fields:
            key = f"{section}.{f.name}"
            meta = f.metadata
            comment = meta.get("doc", "")
            bounds = _bounds(meta)
            if bounds:
                comment += f" ({bounds})"
            lines.append(f"# {comment}")
            value = _EXAMPLE_VALUES.get(key, f.default)
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "The agent reads one TOML file (`telematics-agent run --config FILE`). Every key is",
        "optional except `device.id`. Unknown keys, wrong types and out-of-range values are",
        "rejected at start with the file, the dotted key and what was expected, and the agent",
        "exits with status 2. A SIGHUP reloads the file; a bad file is refused and the running",
        "configuration kept. `config/agent.example.toml` lists every key with its default.",
        "",
        "This page is generated from `agent/config.py` (`python -m agent.configdoc`); a test",
        "fails when it is stale.",
    ]
    for section, fields, doc in _walk(Config):
        if not fields:
            continue
        lines += ["", f"## `[{section}]`" + (f" — {doc}" if doc else ""), ""]
        lines += ["| key | default | accepts | meaning |", "|---|---|---|---|"]
        for f in fields:
            default = _toml_value(f.default)
            meaning = str(f.metadata.get("doc", "")).replace("|", "\\|")
            lines.append(
                f"| `{f.name}` | `{default}` | {_bounds(f.metadata)} | {meaning} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    EXAMPLE.parent.mkdir(exist_ok=True)
    EXAMPLE.write_text(render_example())
    REFERENCE.write_text(render_reference())
    print(f"wrote {EXAMPLE} and {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
