"""The OBD reader against the emulated ELM327 over real pseudo-terminals."""

from __future__ import annotations

import itertools
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.obd import (
    FUELS,
    OBDReader,
    OBDSettings,
    maf_fuel_rate_lph,
    speed_density_maf_gps,
)
from drivers.samples import (
    DTCSample,
    FuelRateSource,
    LinkSample,
    LinkState,
    OBDReading,
    Sample,
    VehicleInfo,
)
from simulator.elm327 import DEFAULT_PIDS, VARIANTS, ELM327Server
from simulator.model import LiveVehicle, VehicleModel
from simulator.scenario import parse_scenario
from simulator.state import FixedState, running_van
from tests.integration.test_obd_python_obd import PULLING_AWAY, ModelWindow
from tests.samples import SampleCollector

STATE = running_van(dtcs=("P0301",), pending_dtcs=("P0420",))


Rig = tuple[OBDReader, ELM327Server, SampleCollector, FixedState]


def start_rig(
    tmp_path: Path,
    variant: str = "v1.5",
    pids: frozenset[int] | None = None,
    name: str = "obd0",
    **settings: object,
) -> Rig:
    van = FixedState(STATE)
    server = ELM327Server(van, tmp_path / name, variant=variant, latency_s=0.01, pids=pids)
    server.start()
    samples = SampleCollector()
    reader = OBDReader(
        OBDSettings(port=str(server.path), fuel_type="petrol", **settings),  # type: ignore[arg-type]
        samples.emit,
        time.monotonic,
    )
    reader.start()
    return reader, server, samples, van


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    started: list[Rig] = []
    yield started
    for reader, server, _samples, _van in started:
        reader.stop(timeout_s=5.0)
        server.stop()


def is_reading_with(*names: str) -> Callable[[Sample], bool]:
    def match(sample: Sample) -> bool:
        return isinstance(sample, OBDReading) and all(getattr(sample, n) is not None for n in names)

    return match


def test_readings_match_the_model_and_follow_ignition(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = start_rig(tmp_path, voltage_interval_s=1.0, slow_interval_s=1.0)
    rigs.append(rig)
    reader, _server, samples, van = rig
    _, info = samples.wait_for(lambda s: isinstance(s, VehicleInfo), 10.0)
    assert isinstance(info, VehicleInfo)
    assert info.adapter == "ELM327 v1.5"
    assert info.protocol == "ISO 15765-4 (CAN 11/500)"
    assert info.vin == "WF0XXXTTGXKA12345"
    assert info.multi_pid is True
    assert {"0C", "0D", "5E", "A6", "10", "0B"} <= set(info.supported_pids)
    _, dtcs = samples.wait_for(lambda s: isinstance(s, DTCSample), 5.0)
    assert dtcs == DTCSample(dtcs.ts_mono, ("P0301",), ("P0420",))

    t_change = time.monotonic()
    van.update(speed_kmh=88.0, rpm=2400.0, coolant_c=92.0, fuel_level_pct=40.0)
    _, fast = samples.wait_for(is_reading_with("speed_kmh"), 3.0, after=t_change + 0.05)
    assert isinstance(fast, OBDReading)
    assert (fast.speed_kmh, fast.rpm) == (88.0, 2400.0)
    _, medium = samples.wait_for(is_reading_with("fuel_rate_lph"), 3.0)
    assert isinstance(medium, OBDReading)
    assert medium.fuel_rate_source == FuelRateSource.PID_5E
    assert medium.fuel_rate_lph == 6.5
    assert medium.maf_gps == 12.34 and medium.map_kpa == 65.0 and medium.intake_c == 30.0
    assert medium.engine_load_pct == pytest.approx(40.0, abs=0.2)
    # The slow group (every second here): a round that started after the change.
    _, slow = samples.wait_for(is_reading_with("odometer_km"), 3.0, after=t_change + 0.3)
    assert isinstance(slow, OBDReading)
    assert slow.odometer_km == 123456.7 and slow.runtime_s == 600.0
    assert slow.coolant_c == 92.0
    assert slow.fuel_level_pct == pytest.approx(40.0, abs=50 / 255)  # 100/255 % per step
    _, volts = samples.wait_for(is_reading_with("voltage_v"), 3.0)
    assert isinstance(volts, OBDReading) and volts.voltage_v == 14.1

    # Ignition off: no more ECU requests, only ATRV on its interval.
    van.update(ignition=False, engine_running=False, rpm=0.0, speed_kmh=0.0, battery_v=12.5)
    reader.set_ignition(False)
    time.sleep(0.3)
    t_off = time.monotonic()
    requests_before = reader.stats().get("requests", 0)
    samples.wait_for(lambda s: isinstance(s, OBDReading) and s.voltage_v == 12.5, 3.0, t_off)
    time.sleep(1.0)
    assert reader.stats().get("requests", 0) == requests_before
    assert not [
        s
        for s in samples.of(OBDReading, t_off)
        if isinstance(s, OBDReading) and s.speed_kmh is not None
    ]

    # Ignition on: the driver re-probes (a fresh VehicleInfo) and polls again.
    van.update(ignition=True, engine_running=True, rpm=800.0, battery_v=14.2)
    t_on = time.monotonic()
    reader.set_ignition(True)
    samples.wait_for(lambda s: isinstance(s, VehicleInfo), 5.0, after=t_on)
    _, again = samples.wait_for(is_reading_with("rpm"), 3.0, after=t_on)
    assert isinstance(again, OBDReading) and again.rpm == 800.0
    assert reader.stats()["readings"] > 5
    assert reader.last_progress > t_on


# Vans run with the automatic protocol search (python-obd's, three seconds of fixed waits);
# once it found the protocol the reader reconnects with it ("try protocol", which falls back
# to a search). Pinning CAN 11/500 only saves the first search.
@pytest.mark.parametrize("protocol", ["", "6"], ids=["auto", "pinned"])
def test_unplug_and_replug_resume_within_5_s(
    tmp_path: Path, rigs: list[Rig], protocol: str
) -> None:
    rig = start_rig(tmp_path, protocol=protocol)
    rigs.append(rig)
    reader, server, samples, van = rig
    samples.wait_for(is_reading_with("rpm"), 10.0)
    t_unplug = time.monotonic()
    server.unplug()
    _, down = samples.wait_for(lambda s: isinstance(s, LinkSample), 3.0, after=t_unplug)
    assert isinstance(down, LinkSample) and down.state == LinkState.DOWN
    time.sleep(1.5)
    t_replug = time.monotonic()
    server.replug()
    t_up, _up = samples.wait_for(
        lambda s: isinstance(s, LinkSample) and s.state == LinkState.UP, 5.0, after=t_replug
    )
    t_read, _ = samples.wait_for(is_reading_with("rpm"), 5.0, after=t_replug)
    assert t_read - t_replug < 5.0
    assert reader.stats()["reconnects"] >= 1
    # The source going offline (the scenario's way to unplug) works the same.
    van.update(obd_online=False)
    t_gone = time.monotonic()
    samples.wait_for(
        lambda s: isinstance(s, LinkSample) and s.state == LinkState.DOWN, 3.0, after=t_gone
    )
    van.update(obd_online=True)
    t_back = time.monotonic()
    t_read2, _ = samples.wait_for(is_reading_with("rpm"), 5.0, after=t_back)
    assert t_read2 - t_back < 5.0
    assert t_up >= t_replug


def test_clone_without_multi_pid_falls_back_to_one_pid_per_request(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = start_rig(tmp_path, variant="clone-v2.1")
    rigs.append(rig)
    _reader, _server, samples, _van = rig
    _, info = samples.wait_for(lambda s: isinstance(s, VehicleInfo), 10.0)
    assert isinstance(info, VehicleInfo)
    assert info.adapter == "ELM327 v2.1" and info.multi_pid is False
    _, fast = samples.wait_for(is_reading_with("speed_kmh", "rpm"), 3.0)
    assert isinstance(fast, OBDReading) and (fast.speed_kmh, fast.rpm) == (57.0, 1650.25)
    _, medium = samples.wait_for(is_reading_with("fuel_rate_lph", "maf_gps", "map_kpa"), 3.0)
    assert isinstance(medium, OBDReading) and medium.fuel_rate_lph == 6.5


def test_garbage_replies_are_counted_never_fatal(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = start_rig(tmp_path, variant="noisy-v1.5", protocol="6", fast_hz=10.0, medium_hz=5.0)
    rigs.append(rig)
    reader, _server, samples, _van = rig
    samples.wait_for(is_reading_with("rpm"), 10.0)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        stats = reader.stats()
        if stats.get("garbage", 0) >= 3 and stats.get("errors.can_error", 0) >= 1:
            break
        time.sleep(0.1)
    stats = reader.stats()
    assert stats.get("garbage", 0) >= 3, stats
    assert stats.get("errors.can_error", 0) >= 1, stats
    assert "errors.internal" not in stats
    t = time.monotonic()
    _, reading = samples.wait_for(is_reading_with("rpm"), 3.0, after=t)
    assert isinstance(reading, OBDReading) and reading.rpm == 1650.25
    assert not [s for s in samples.of(LinkSample) if s.state == LinkState.DOWN]  # type: ignore[union-attr]


def test_fuel_rate_from_maf_and_from_speed_density(tmp_path: Path, rigs: list[Rig]) -> None:
    # Both rigs run at once to keep the test short; the second has neither 5E nor MAF.
    no_5e = frozenset(DEFAULT_PIDS - {0x5E})
    no_5e_no_maf = frozenset(DEFAULT_PIDS - {0x5E, 0x10})
    rigs.append(start_rig(tmp_path, pids=no_5e, name="maf", protocol="6"))
    rigs.append(start_rig(tmp_path, pids=no_5e_no_maf, name="sd", protocol="6"))
    petrol = FUELS["petrol"]
    _, maf = rigs[0][2].wait_for(is_reading_with("fuel_rate_lph"), 12.0)
    assert isinstance(maf, OBDReading) and maf.fuel_rate_source == FuelRateSource.MAF
    assert maf.fuel_rate_lph == pytest.approx(maf_fuel_rate_lph(12.34, petrol))
    assert maf.fuel_rate_lph == pytest.approx(12.34 * 3600 / (14.7 * 745.0))
    _, sd = rigs[1][2].wait_for(is_reading_with("fuel_rate_lph"), 12.0)
    assert isinstance(sd, OBDReading) and sd.fuel_rate_source == FuelRateSource.SPEED_DENSITY
    air_gps = speed_density_maf_gps(65.0, 30.0, 1650.25, 2.0, 0.85)
    assert air_gps == pytest.approx(
        65000 * (0.002 * 1650.25 / 120) * 0.85 / (287.05 * 303.15) * 1000
    )
    assert sd.fuel_rate_lph == pytest.approx(maf_fuel_rate_lph(air_gps, petrol))
    assert sd.maf_gps is None


def test_silent_adapter_goes_down_and_the_reader_still_stops(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    rig = start_rig(tmp_path, timeout_s=0.3, protocol="6")
    rigs.append(rig)
    reader, server, samples, _van = rig
    samples.wait_for(is_reading_with("rpm"), 10.0)
    t = time.monotonic()
    server.silent = True
    samples.wait_for(
        lambda s: isinstance(s, LinkSample) and s.state == LinkState.DOWN, 5.0, after=t
    )
    assert reader.stats()["errors.silence"] >= 3
    server.silent = False
    t_back = time.monotonic()
    t_read, _ = samples.wait_for(is_reading_with("rpm"), 8.0, after=t_back)
    assert t_read - t_back < 8.0
    t_stop = time.monotonic()
    reader.stop(timeout_s=5.0)
    assert time.monotonic() - t_stop < 5.5


def test_starts_with_ignition_off_then_probes_at_ignition_on(
    tmp_path: Path, rigs: list[Rig]
) -> None:
    van = FixedState(running_van(ignition=False, engine_running=False, battery_v=12.6))
    server = ELM327Server(van, tmp_path / "obd0", latency_s=0.01)
    server.start()
    samples = SampleCollector()
    reader = OBDReader(OBDSettings(port=str(server.path)), samples.emit, time.monotonic)
    reader.set_ignition(False)
    reader.start()
    rigs.append((reader, server, samples, van))
    samples.wait_for(lambda s: isinstance(s, LinkSample) and s.state == LinkState.UP, 10.0)
    _, volts = samples.wait_for(is_reading_with("voltage_v"), 3.0)
    assert isinstance(volts, OBDReading) and volts.voltage_v == 12.6
    assert not samples.of(VehicleInfo)
    van.update(ignition=True, engine_running=True, battery_v=14.0)
    t_on = time.monotonic()
    reader.set_ignition(True)
    _, info = samples.wait_for(lambda s: isinstance(s, VehicleInfo), 5.0, after=t_on)
    assert isinstance(info, VehicleInfo) and info.vin == STATE.vin
    assert info.protocol == "ISO 15765-4 (CAN 11/500)"
    samples.wait_for(is_reading_with("rpm"), 3.0, after=t_on)


def test_low_battery_stops_ecu_queries(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = start_rig(tmp_path, protocol="6", voltage_interval_s=1.0, low_voltage_v=11.8)
    rigs.append(rig)
    reader, _server, samples, van = rig
    samples.wait_for(is_reading_with("rpm"), 10.0)
    van.update(battery_v=11.2)
    t_low = time.monotonic()
    samples.wait_for(lambda s: isinstance(s, OBDReading) and s.voltage_v == 11.2, 3.0, t_low)
    time.sleep(0.2)
    before = reader.stats()["requests"]
    time.sleep(1.5)
    assert reader.stats()["requests"] == before
    van.update(battery_v=12.4)
    t_ok = time.monotonic()
    samples.wait_for(is_reading_with("rpm"), 3.0, after=t_ok)


def test_a_device_that_is_not_an_elm327_is_reported_not_fatal(tmp_path: Path) -> None:
    from simulator.pty import PtyDevice

    device = PtyDevice(tmp_path / "junk")
    device.plug()
    stop = threading.Event()

    def answer_junk() -> None:
        while not stop.is_set():
            if device.read(0.05):
                device.write(b"\x00\xffZZ\r\n>")

    thread = threading.Thread(target=answer_junk, daemon=True)
    thread.start()
    samples = SampleCollector()
    reader = OBDReader(
        OBDSettings(port=str(device.link_path), timeout_s=0.3), samples.emit, time.monotonic
    )
    reader.start()
    try:
        _, down = samples.wait_for(lambda s: isinstance(s, LinkSample), 10.0)
        assert isinstance(down, LinkSample) and down.state == LinkState.DOWN
        assert "handshake" in down.reason
        deadline = time.monotonic() + 10.0
        while reader.stats().get("errors.connect", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.stats().get("errors.connect", 0) >= 2
        assert "errors.internal" not in reader.stats()
    finally:
        t_stop = time.monotonic()
        reader.stop(timeout_s=5.0)
        stop.set()
        device.unplug()
    assert time.monotonic() - t_stop < 5.5
    assert not samples.of(VehicleInfo)


def test_multi_pid_falls_back_when_replies_turn_short(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = start_rig(tmp_path, protocol="6", fast_hz=10.0)
    rigs.append(rig)
    reader, server, samples, _van = rig
    _, info = samples.wait_for(lambda s: isinstance(s, VehicleInfo), 10.0)
    assert isinstance(info, VehicleInfo) and info.multi_pid
    # The adapter starts behaving like a clone that truncates multi-PID replies.
    server.elm.variant = VARIANTS["clone-v2.1"]
    deadline = time.monotonic() + 5.0
    while not reader.stats().get("multi_pid_fallbacks") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.stats().get("multi_pid_fallbacks") == 1
    t = time.monotonic()
    _, both = samples.wait_for(is_reading_with("speed_kmh", "rpm"), 3.0, after=t)
    assert isinstance(both, OBDReading) and (both.speed_kmh, both.rpm) == (57.0, 1650.25)


def test_a_babbling_adapter_is_down_until_it_talks_sense(tmp_path: Path, rigs: list[Rig]) -> None:
    rig = start_rig(tmp_path, protocol="6", timeout_s=0.3)
    rigs.append(rig)
    reader, server, samples, _van = rig
    samples.wait_for(is_reading_with("rpm"), 10.0)
    t = time.monotonic()
    server.babbling = True
    samples.wait_for(
        lambda s: isinstance(s, LinkSample) and s.state == LinkState.DOWN, 5.0, after=t
    )
    assert reader.stats()["garbage"] >= 3
    assert "errors.internal" not in reader.stats()
    server.babbling = False
    t_sense = time.monotonic()
    samples.wait_for(
        lambda s: isinstance(s, LinkSample) and s.state == LinkState.UP, 8.0, after=t_sense
    )
    samples.wait_for(is_reading_with("rpm"), 5.0, after=t_sense)


# OBDReading field -> (vehicle state field, one step of the PID's encoding; ATRV prints 0.1 V).
READING_FIELDS = {
    "speed_kmh": ("speed_kmh", 1.0),
    "rpm": ("rpm", 0.25),
    "engine_load_pct": ("engine_load_pct", 100 / 255),
    "coolant_c": ("coolant_c", 1.0),
    "intake_c": ("intake_c", 1.0),
    "maf_gps": ("maf_gps", 0.01),
    "map_kpa": ("map_kpa", 1.0),
    "fuel_level_pct": ("fuel_level_pct", 100 / 255),
    "fuel_rate_lph": ("fuel_rate_lph", 0.05),
    "runtime_s": ("runtime_s", 1.0),
    "odometer_km": ("odometer_km", 0.1),
    "voltage_v": ("battery_v", 0.1),
}


def test_every_reading_matches_the_moving_model(tmp_path: Path, rigs: list[Rig]) -> None:
    model = VehicleModel(parse_scenario(tomllib.loads(PULLING_AWAY), Path("pulling_away.toml")))
    # The van pulls away at t = 600 s, about when the reader has connected and probed.
    live = LiveVehicle(model, 1.0, start_mono_s=time.monotonic() - 598.5)
    server = ELM327Server(live, tmp_path / "obd0", latency_s=0.01)
    server.start()
    samples = SampleCollector()
    settings = OBDSettings(
        port=str(server.path),
        protocol="6",
        fast_hz=5.0,
        medium_hz=2.0,
        slow_interval_s=1.0,
        voltage_interval_s=1.0,
    )
    reader = OBDReader(settings, samples.emit, time.monotonic)
    reader.start()
    rigs.append((reader, server, samples, FixedState(STATE)))  # the fixture stops them
    t_info, _ = samples.wait_for(lambda s: isinstance(s, VehicleInfo), 10.0)
    time.sleep(5.0)
    window = ModelWindow(live)
    timeline = [(t, s) for t, s in list(samples.samples) if t >= t_info]
    seen: dict[str, list[float]] = {name: [] for name in READING_FIELDS}
    for (t_before, _), (t, sample) in itertools.pairwise(timeline):
        if not isinstance(sample, OBDReading):
            continue
        # The reader is one thread: every request of this round went out after it emitted
        # the previous sample, and the reply came back before it emitted this one.
        for name, (field, lsb) in READING_FIELDS.items():
            value = getattr(sample, name)
            if value is not None:
                window.check(name, value, field, lsb, t_before, t)
                seen[name].append(value)
        if sample.fuel_rate_lph is not None:
            assert sample.fuel_rate_source == FuelRateSource.PID_5E
    for name, values in seen.items():
        assert len(values) >= 3, (name, len(values))
    assert seen["speed_kmh"][-1] > seen["speed_kmh"][0] > 0.0  # the van did move meanwhile
    assert reader.stats().get("errors.no_data", 0) == 0


class NoCountDigit(OBDReader):
    """The reader without the response-count digit: the adapter waits as ATAT says."""

    RESPONSE_COUNT = False


class Untuned(OBDReader):
    """The reader leaving the adapter as python-obd does: spaces on, ATAT1, ATST default."""

    TUNING = ()
    RESPONSE_COUNT = False


def test_adapter_tuning_speeds_up_polling(tmp_path: Path, rigs: list[Rig]) -> None:
    # Three readers at once (so machine load hits them alike), each with its own emulated
    # adapter at a realistic 30 ms ECU latency and every poll group always due.
    for cls in (OBDReader, NoCountDigit, Untuned):
        van = FixedState(STATE)
        server = ELM327Server(van, tmp_path / cls.__name__, latency_s=0.03)
        server.start()
        samples = SampleCollector()
        settings = OBDSettings(
            port=str(server.path),
            protocol="6",
            fast_hz=1000.0,
            medium_hz=1000.0,
            slow_interval_s=0.001,
            voltage_interval_s=3600.0,
            dtc_interval_s=3600.0,
        )
        reader = cls(settings, samples.emit, time.monotonic)
        reader.start()
        rigs.append((reader, server, samples, van))
    for _reader, _server, samples, _van in rigs:
        samples.wait_for(lambda s: isinstance(s, VehicleInfo), 15.0)
    time.sleep(0.3)
    start = [(time.monotonic(), r.stats().get("values", 0)) for r, _, _, _ in rigs]
    time.sleep(3.0)
    rates = []
    for (t0, v0), (reader, _server, _samples, _van) in zip(start, rigs, strict=True):
        rates.append((reader.stats().get("values", 0) - v0) / (time.monotonic() - t0))
    tuned, at_only, untuned = rates
    servers = [server.elm for _, server, _, _ in rigs]
    # The tuning reached the adapter: spaces off and aggressive adaptive timing, or not.
    assert [(e.spaces, e.adaptive, e.timeout_st) for e in servers] == [
        (False, 2, 0x32),
        (False, 2, 0x32),
        (True, 1, 0x32),
    ]
    # ATAT2 halves the adapter's wait for more replies after each reply (34 ms instead of
    # 68 ms); the response-count digit removes it.
    assert at_only > 1.2 * untuned, rates
    assert tuned > 1.5 * untuned, rates
