"""What the watchdog and health records rest on: stage progress, device picture, host figures."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

from agent.health import (
    DeviceStatus,
    ProgressMonitor,
    cpu_temp_c,
    rss_bytes,
    system_fields,
    throttle_flags,
)
from drivers.samples import (
    FixMode,
    GNSSFix,
    IgnitionSample,
    Link,
    LinkSample,
    LinkState,
    OBDReading,
)


def test_a_stage_without_progress_is_stalled() -> None:
    now = [100.0]
    monitor = ProgressMonitor(stall_after_s=3.0, clock=lambda: now[0])
    progress = {"pipeline": 100.0, "publisher": 100.0}
    monitor.watch("pipeline", lambda: progress["pipeline"])
    monitor.watch("publisher", lambda: progress["publisher"])
    assert monitor.healthy()
    now[0] = 102.9
    assert monitor.healthy()
    now[0] = 103.5
    progress["publisher"] = 103.4
    assert monitor.stalled() == ["pipeline"]
    report = {r.name: r for r in monitor.check()}
    assert report["pipeline"].age_s == 3.5 and not report["pipeline"].ok
    assert report["publisher"].ok


def _fix(ts: float) -> GNSSFix:
    return GNSSFix(
        ts, dt.datetime(2026, 3, 2, tzinfo=dt.UTC), 51.3, 12.4, 100.0, 5.0, 90.0,
        FixMode.FIX_3D, None, 9, 0.8,
    )


def test_device_status_reports_changes_and_figures() -> None:
    now = [10.0]
    device = DeviceStatus(lambda: now[0])
    assert device.fields() == {} and device.parked is None
    assert device.observe(_fix(9.0)), "first fix: the GNSS link is up"
    assert not device.observe(_fix(9.5))
    assert device.observe(LinkSample(9.6, Link.OBD, LinkState.UP))
    assert not device.observe(OBDReading(9.7, voltage_v=14.12))
    assert device.observe(IgnitionSample(9.8, False))
    assert not device.observe(IgnitionSample(9.9, False))
    assert device.fields() == {
        "gnss": {"link": "up", "fix_age_s": 0.5, "sats": 9, "hdop": 0.8},
        "obd": {"link": "up", "voltage_v": 14.12},
        "ignition": {"on": False, "source": "gpio"},
        "parked": True,
    }


def test_throttle_flags_from_sysfs_then_vcgencmd(tmp_path: Path) -> None:
    sysfs = tmp_path / "get_throttled"
    sysfs.write_text("50005\n")
    flags = throttle_flags(sysfs, vcgencmd="/nonexistent")
    assert flags is not None
    assert flags["under_voltage"] and flags["throttled"] and not flags["freq_capped"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    # No sysfs file: a real vcgencmd-like program is asked instead.
    tool = tmp_path / "vcgencmd"
    tool.write_text("#!/bin/sh\necho throttled=0x80008\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    flags = throttle_flags(tmp_path / "absent", vcgencmd=str(tool))
    assert flags is not None
    assert flags["soft_temp_limit"] and flags["soft_temp_limit_occurred"]
    assert not flags["under_voltage"]
    tool.write_text("#!/bin/sh\necho garbage\n")
    assert throttle_flags(tmp_path / "absent", vcgencmd=str(tool)) is None


def test_host_figures_are_real_or_omitted(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert cpu_temp_c(zone) == 48.312
    zone.write_text("hot\n")
    assert cpu_temp_c(zone) is None
    rss = rss_bytes()
    assert rss is not None and rss > 1_000_000
    fields = system_fields(tmp_path)
    vfs = os.statvfs(tmp_path)
    # Free space moves while other tests write; the same order of magnitude is the point.
    assert abs(fields["disk_free_bytes"] - vfs.f_bavail * vfs.f_frsize) < 1 << 30
    assert "rss_bytes" in fields
