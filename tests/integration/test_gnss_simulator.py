"""The GNSS receiver thread against the simulator's talker: a whole drive over a pseudo-terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivers.gnss import GNSSReceiver, GNSSSettings
from drivers.samples import GNSSFix, LinkSample, LinkState, Sample
from simulator.model import LiveVehicle, VehicleModel
from simulator.nmea import Talker
from simulator.pty import PtyDevice
from simulator.scenario import parse_scenario
from simulator.talker import GNSSTalker, Receiver
from tests.samples import SampleCollector

TIME_SCALE = 20.0
SCENARIO = {
    "name": "gnss_faults",
    "start_utc": "2026-03-02T10:00:00Z",
    "seed": 7,
    "route": {"waypoints": [[51.34, 12.37], [51.34, 12.40], [51.35, 12.40]]},
    # sim seconds; at x20: cold start until 0.5 s, garbage at 1 s, outage 1.5-2.25 s (real)
    "gnss": {
        "cold_start_s": 10,
        "garbage": [{"t_s": 20, "bytes": 300}],
        "bad_checksums": [{"t_s": 22, "count": 4}],
        "outages": [{"t_s": 30, "duration_s": 15}],
    },
    "plan": [{"do": "idle", "duration_s": 5}, {"do": "drive", "speed_kmh": 40}],
}


def is_state(state: LinkState) -> Callable[[Sample], bool]:
    return lambda s: isinstance(s, LinkSample) and s.state is state


def test_drive_with_cold_start_garbage_outage_and_unplug(tmp_path: Path) -> None:
    scenario = parse_scenario(SCENARIO, tmp_path / "gnss_faults.toml")
    model = VehicleModel(scenario)
    device = PtyDevice(tmp_path / "gnss0")
    receiver = Receiver(scenario.gnss, Talker.GN, rate_hz=1.0, seed=scenario.seed)
    collector = SampleCollector()
    rx = GNSSReceiver(GNSSSettings(port=str(device.link_path)), collector, time.monotonic)
    device.plug()
    rx.start()
    talker = GNSSTalker(model, LiveVehicle(model, TIME_SCALE), device, receiver)
    talker.start()
    try:
        # Cold start: epochs without time or fix, then the first fix.
        t_nofix = collector.wait_for(is_state(LinkState.NO_FIX), 3.0)[0]
        t_up = collector.wait_for(is_state(LinkState.UP), 3.0, after=t_nofix)[0]
        # Garbage and bad checksums at 1 s real: fixes keep coming, the damage is counted.
        t_lost = collector.wait_for(is_state(LinkState.NO_FIX), 4.0, after=t_up)[0]
        assert rx.stats()["bad_checksum"] == 4
        assert rx.stats()["garbage_bytes"] >= 300
        # The tunnel: no fix, then the fix returns.
        t_back = collector.wait_for(is_state(LinkState.UP), 3.0, after=t_lost)[0]
        fixes = [s for t, s in collector.samples if isinstance(s, GNSSFix) and t_up <= t < t_lost]
        assert len(fixes) >= 15  # 1 Hz of simulated time, minus the bad-checksum epochs
        assert all(f.utc.year == 2026 for f in fixes)
        # Unplug the receiver, replug it: fixes resume within 3 s.
        device.unplug()
        t_down = collector.wait_for(is_state(LinkState.DOWN), 2.0, after=t_back)[0]
        time.sleep(0.5)
        device.replug()
        t_replug = time.monotonic()
        t_fix = collector.wait_for(lambda s: isinstance(s, GNSSFix), 3.0, after=t_replug)[0]
        assert t_fix - t_replug < 3.0
        assert t_down < t_replug
        states = [state for state, _ in collector.links()]
        assert states == ["no_fix", "up", "no_fix", "up", "down", "up"]
    finally:
        talker.stop()
        rx.stop()
        device.unplug()
