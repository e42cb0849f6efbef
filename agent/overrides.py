"""Overrides: remote ``set_config`` changes, persisted in the state dir and merged over the file.

The configuration file belongs to the technician (and to the image's ConfigurationDirectory,
often read-only); remote changes live in ``<state_dir>/overrides.toml`` as flat dotted keys::

    "report.moving_interval_s" = 5.0
    "detect.harsh.brake_bands_mps2" = [-3.0, -4.0, -5.0]

They are merged at every load (start and SIGHUP), so the file's own values show through again
once an override is removed. A change is first staged in ``overrides.pending.toml`` and moves
to ``overrides.toml`` only once the agent stayed healthy with it; a staged file found at start
means the agent did not survive the change, and it is discarded.

tomllib cannot write TOML, and our values are flat (numbers, booleans, strings, lists of
numbers), so :func:`dump_toml` writes that subset itself; the write
is atomic (temporary file, fsync, rename) so a power cut leaves the old or the new file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config import Config, replace_keys
from agent.errors import ConfigError

logger = logging.getLogger(__name__)

FILE_NAME = "overrides.toml"
PENDING_NAME = "overrides.pending.toml"

# Keys a remote command may change: they tune reporting and detection, never identity, broker,
# credentials or device paths (which could cut the van off for good).
ALLOWED_PREFIXES = ("report.", "detect.")
ALLOWED_KEYS = frozenset({"health.interval_s", "spool.flush_interval_s"})


def allowed(key: str) -> bool:
    return key in ALLOWED_KEYS or key.startswith(ALLOWED_PREFIXES)


def dump_toml(values: Mapping[str, Any]) -> str:
    lines = []
    for key in sorted(values):
        lines.append(f"{json.dumps(key)} = {_toml_value(values[key], key)}")
    return "".join(line + "\n" for line in lines)


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"key {key!r}: expected a finite number, got {value}")
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    raise ConfigError(f"key {key!r}: cannot store a {type(value).__name__} in overrides")


class Overrides:
    """The persisted remote changes of one device."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read overrides ({exc})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.path}: not valid TOML: {exc}") from None
        for key in data:
            if not allowed(key):
                raise ConfigError(f"{self.path}: key {key!r}: not changeable remotely")
        return data

    @property
    def pending_path(self) -> Path:
        return self.path.with_name(PENDING_NAME)

    def write(self, values: Mapping[str, Any]) -> None:
        self._write(self.path, values)

    def stage(self, values: Mapping[str, Any]) -> None:
        """Persist a change that is not confirmed yet (see :meth:`apply`)."""
        self._write(self.pending_path, values)

    def confirm(self) -> None:
        os.replace(self.pending_path, self.path)

    def discard(self) -> None:
        self.pending_path.unlink(missing_ok=True)

    def _write(self, path: Path, values: Mapping[str, Any]) -> None:
        text = dump_toml(values)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def apply(self, cfg: Config, *, startup: bool = True) -> Config:
        """``cfg`` with the persisted overrides; bad overrides are set aside, never fatal.

        A van must not crash-loop because of a remote change that a later release no longer
        accepts: the file is renamed to ``overrides.toml.rejected`` and the reason logged.
        A staged change still here was never confirmed healthy: the agent stalled or died
        inside the confirmation window (the watchdog restarted it), so it is discarded.
        """
        if startup and self.pending_path.exists():
            logger.warning(
                "discarding remote configuration change %s: the agent restarted before it was"
                " confirmed healthy",
                self.pending_path,
            )
            self.discard()
        try:
            values = self.read()
            if not values:
                return cfg
            merged = replace_keys(cfg, values)
        except ConfigError as exc:
            rejected = self.path.with_name(FILE_NAME + ".rejected")
            logger.warning(
                "ignoring remote configuration overrides: %s (kept as %s)", exc, rejected
            )
            with contextlib.suppress(OSError):
                os.replace(self.path, rejected)
            return cfg
        logger.info("applied %d remote configuration overrides from %s", len(values), self.path)
        return merged
