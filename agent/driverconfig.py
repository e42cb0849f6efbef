"""Driver configuration: the drivers' settings, made from the agent's configuration sections.

Drivers never import the agent, so each has its own settings dataclass mirroring a config
section field by field. The mapping is by field name: a settings field takes the section's
value of the same name, unless the caller overrides it. ``UNCONFIGURED`` lists the settings
fields that deliberately have no configuration key (a test keeps the two sides in step).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

from agent.config import GNSSSection, IgnitionSection, OBDSection

if TYPE_CHECKING:
    # Imported where used: python-obd costs startup time and memory, and a van
    # without an adapter configured should not pay it.
    from drivers.gnss import GNSSSettings
    from drivers.gpio import GPIOSettings
    from drivers.obd import OBDSettings

T = TypeVar("T")

# Settings fields with no configuration key, and why (by settings class name).
UNCONFIGURED: dict[str, frozenset[str]] = {
    # Epoch bookkeeping, serial read granularity and replug retry pace: driver internals tuned
    # so fixes resume within seconds of a replug.
    "GNSSSettings": frozenset(
        {"fix_timeout_s", "read_timeout_s", "backoff_min_s", "backoff_max_s"}
    ),
    "OBDSettings": frozenset({"protocol"}),  # pinned only by tests and the bench; auto in vans
    "GPIOSettings": frozenset({"poll_s"}),  # line polling period, a driver detail
}


def settings_for(cls: type[T], section: object, **overrides: Any) -> T:
    """``cls`` filled from the same-named fields of ``section``, then ``overrides``."""
    values = {
        f.name: getattr(section, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if hasattr(section, f.name)
    }
    values.update(overrides)
    return cls(**values)


def gnss_settings(section: GNSSSection, **overrides: Any) -> GNSSSettings:
    from drivers.gnss import GNSSSettings

    return settings_for(GNSSSettings, section, **overrides)


def obd_settings(section: OBDSection, **overrides: Any) -> OBDSettings:
    from drivers.obd import OBDSettings

    return settings_for(OBDSettings, section, **overrides)


def gpio_settings(section: IgnitionSection, **overrides: Any) -> GPIOSettings:
    from drivers.gpio import GPIOSettings

    return settings_for(GPIOSettings, section, **overrides)
