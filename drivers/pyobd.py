"""Import python-obd without pint: about 15 MB less resident memory for the daemon.

python-obd's ``obd.UnitsAndScaling`` builds a ``pint.UnitRegistry`` when the package is
imported, so that its decoders can return pint quantities. Importing pint costs about 15 MB of
RSS and a fifth of a second of CPU: more than a third of the daemon's 40 MB budget on a Pi Zero
2 W. The OBD reader never uses python-obd's decoders: python-obd only opens the port, resets the
adapter and detects the protocol (``obd.OBD``), and our own parser in ``drivers.elm327`` decodes
every reply. The support bitmaps python-obd reads during its handshake use its ``pid`` decoder,
which returns bit arrays, not quantities.

So :func:`import_obd` imports python-obd with a small stand-in for pint in ``sys.modules`` and
takes the stand-in out again afterwards, so a later ``import pint`` anywhere in the process gets
the real package. A quantity the stand-in makes (should a python-obd decoder ever run) carries
its magnitude and the unit's name and nothing more. When python-obd is already imported (a test
or a benchmark that uses it with pint), that module is used as it is.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

_lock = threading.Lock()


class Unit:
    """A unit name that composes like pint's for the expressions python-obd evaluates."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __mul__(self, other: object) -> Any:
        if isinstance(other, Unit):
            return Unit(f"{self.name} * {other.name}")
        return Quantity(other, self)

    __rmul__ = __mul__

    def __truediv__(self, other: Unit) -> Unit:
        return Unit(f"{self.name} / {other.name}")

    def __pow__(self, power: int) -> Unit:
        return Unit(f"{self.name} ** {power}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unit) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<Unit({self.name!r})>"


class Quantity:
    """A magnitude and a unit; what python-obd's decoders would return with the stand-in."""

    __slots__ = ("magnitude", "units")

    def __init__(self, magnitude: object, units: Unit) -> None:
        self.magnitude = magnitude
        self.units = units

    def __str__(self) -> str:
        return f"{self.magnitude} {self.units}"

    def __repr__(self) -> str:
        return f"<Quantity({self.magnitude!r}, {self.units.name!r})>"


class UnitRegistry:
    """``pint.UnitRegistry`` as far as ``obd.UnitsAndScaling`` uses it."""

    Quantity = Quantity

    def define(self, definition: str) -> None:
        """Definitions only name units; the stand-in makes any name on demand."""

    def __getattr__(self, name: str) -> Unit:
        if name.startswith("__"):
            raise AttributeError(name)
        return Unit(name)


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("pint", "stand-in for pint while python-obd is imported")
    module.UnitRegistry = UnitRegistry  # type: ignore[attr-defined]
    module.Quantity = Quantity  # type: ignore[attr-defined]
    module.Unit = Unit  # type: ignore[attr-defined]
    return module


def import_obd() -> types.ModuleType:
    """The ``obd`` package, imported without pint unless it (or pint) is already loaded."""
    with _lock:
        if "obd" in sys.modules or "pint" in sys.modules:
            return importlib.import_module("obd")
        sys.modules["pint"] = _stand_in()
        try:
            return importlib.import_module("obd")
        finally:
            del sys.modules["pint"]
