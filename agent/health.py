"""Health: per-stage progress for the watchdog, the device picture, and the health record."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drivers.samples import (
    DTCSample,
    GNSSFix,
    IgnitionSample,
    Link,
    LinkSample,
    LinkState,
    OBDReading,
    Sample,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StageReport:
    name: str
    age_s: float  # seconds since the stage last made progress
    ok: bool


class ProgressMonitor:
    """Watches every stage's ``last_progress`` (a ``time.monotonic()`` reading).

    A stage that has not made progress for ``stall_after_s`` is stalled; the daemon feeds the
    systemd watchdog only while no stage is stalled, so a stuck thread ends in a restart.
    """

    def __init__(
        self, stall_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._probes: dict[str, Callable[[], float]] = {}

    def watch(self, name: str, last_progress: Callable[[], float]) -> None:
        self._probes[name] = last_progress

    def check(self) -> list[StageReport]:
        now = self._clock()
        out = []
        for name, probe in self._probes.items():
            age = max(0.0, now - probe())
            out.append(StageReport(name, age, age < self.stall_after_s))
        return out

    def stalled(self) -> list[str]:
        return [r.name for r in self.check() if not r.ok]

    def healthy(self) -> bool:
        return not self.stalled()


class DeviceStatus:
    """The newest thing each device told us; fed from driver threads, read by the daemon.

    Each attribute is replaced whole by a single assignment (atomic under the GIL), and the
    values are frozen samples, so readers never see half an update.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.fix: GNSSFix | None = None
        self.gnss_link: LinkState | None = None
        self.obd_link: LinkState | None = None
        self.voltage_v: float | None = None
        self.dtc: DTCSample | None = None
        self.ignition: IgnitionSample | None = None

    def observe(self, sample: Sample) -> bool:
        """Record ``sample``; True when a link or the ignition changed (worth a health record)."""
        if isinstance(sample, GNSSFix):
            self.fix = sample
            if self.gnss_link is None:
                self.gnss_link = LinkState.UP
                return True
        elif isinstance(sample, OBDReading):
            if sample.voltage_v is not None:
                self.voltage_v = sample.voltage_v
        elif isinstance(sample, DTCSample):
            self.dtc = sample
        elif isinstance(sample, LinkSample):
            if sample.link is Link.GNSS:
                changed = sample.state != self.gnss_link
                self.gnss_link = sample.state
            else:
                changed = sample.state != self.obd_link
                self.obd_link = sample.state
            return changed
        elif isinstance(sample, IgnitionSample):
            changed = self.ignition is None or self.ignition.on != sample.on
            self.ignition = sample
            return changed
        return False

    @property
    def parked(self) -> bool | None:
        """True after ignition off; None while the ignition state is unknown."""
        return None if self.ignition is None else not self.ignition.on

    def fix_age_s(self) -> float | None:
        fix = self.fix
        return None if fix is None else max(0.0, self._clock() - fix.ts_mono)

    def fields(self) -> dict[str, Any]:
        """GNSS, OBD and ignition figures for health and status (unknown ones are omitted)."""
        out: dict[str, Any] = {}
        gnss: dict[str, Any] = {}
        if self.gnss_link is not None:
            gnss["link"] = str(self.gnss_link)
        fix = self.fix
        if fix is not None:
            age = self.fix_age_s()
            gnss["fix_age_s"] = None if age is None else round(age, 1)
            if fix.sats is not None:
                gnss["sats"] = fix.sats
            if fix.hdop is not None:
                gnss["hdop"] = fix.hdop
        if gnss:
            out["gnss"] = gnss
        obd: dict[str, Any] = {}
        if self.obd_link is not None:
            obd["link"] = str(self.obd_link)
        if self.voltage_v is not None:
            obd["voltage_v"] = round(self.voltage_v, 2)
        if obd:
            out["obd"] = obd
        if self.ignition is not None:
            out["ignition"] = {"on": self.ignition.on, "source": self.ignition.source}
            out["parked"] = not self.ignition.on
        return out


def cpu_temp_c(path: Path = Path("/sys/class/thermal/thermal_zone0/temp")) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware documentation).
_THROTTLE_BITS = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
    "under_voltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}


THROTTLE_SYSFS = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


def throttle_flags(
    sysfs: Path = THROTTLE_SYSFS, vcgencmd: str | None = None
) -> dict[str, bool] | None:
    """Throttling and under-voltage flags; None where neither source exists (not a Pi).

    The firmware driver's sysfs file needs no subprocess and no /dev/vchiq (which the hardened
    unit does not grant); ``vcgencmd get_throttled`` is the fallback on older kernels.
    """
    value = _throttle_value(sysfs, vcgencmd)
    if value is None:
        return None
    return {name: bool(value >> bit & 1) for name, bit in _THROTTLE_BITS.items()}


def _throttle_value(sysfs: Path, vcgencmd: str | None) -> int | None:
    try:
        return int(sysfs.read_text().strip(), 16)  # e.g. "50005"
    except (OSError, ValueError):
        pass
    exe = vcgencmd or shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "get_throttled"], capture_output=True, text=True, timeout=2.0, check=False
        ).stdout
        return int(out.strip().partition("=")[2], 16)  # "throttled=0x50005"
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def disk_free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def rss_bytes() -> int | None:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def system_fields(state_dir: Path) -> dict[str, Any]:
    """Host figures for the health record; figures this machine cannot give are omitted."""
    out: dict[str, Any] = {}
    temp = cpu_temp_c()
    if temp is not None:
        out["cpu_temp_c"] = round(temp, 1)
    flags = throttle_flags()
    if flags is not None:
        out["throttle"] = flags
    free = disk_free_bytes(state_dir)
    if free is not None:
        out["disk_free_bytes"] = free
    rss = rss_bytes()
    if rss is not None:
        out["rss_bytes"] = rss
    return out


def versions() -> dict[str, str]:
    from importlib import metadata

    from agent import __version__

    out = {"agent": __version__, "python": sys.version.split()[0]}
    for dist, key in (("paho-mqtt", "paho_mqtt"), ("obd", "obd"), ("pynmea2", "pynmea2")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
