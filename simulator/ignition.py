"""Ignition line: the simulated GPIO input, a sysfs-style ``value`` file holding ``1`` or ``0``.

The seam with the agent's simulated GPIO backend: the file holds the line's physical level,
``1\\n`` (ignition on; the line is active-high) or ``0\\n``, and is replaced atomically (write a
temporary file, then ``os.replace``) on every change, so a reader polling it never sees a torn or
empty value, exactly like reading ``/sys/class/gpio/gpioN/value``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class IgnitionLine:
    """Writer side of the line file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.level: bool | None = None
        self.changes = 0

    def set(self, level: bool) -> None:
        """Drive the line; writes the file only when the level changes (or the first time)."""
        if level == self.level and self.path.exists():
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("1\n" if level else "0\n", encoding="ascii")
        os.replace(tmp, self.path)
        if self.level is not None:
            self.changes += 1
        self.level = level
        logger.info("ignition line %s", "on" if level else "off")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.path.with_name(f".{self.path.name}.tmp").unlink(missing_ok=True)


def read_level(path: str | Path) -> bool:
    """Read a line file as the agent's backend does; ValueError on anything but 0 or 1."""
    text = Path(path).read_text(encoding="ascii").strip()
    if text not in ("0", "1"):
        raise ValueError(f"{path}: ignition line value must be 0 or 1, got {text!r}")
    return text == "1"
