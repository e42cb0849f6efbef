"""The OBD replay decoder, fuel-rate derivations and the poll plan (all sans-IO)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.elm327 import AdapterReplyError, parse_reply
from drivers.obd import (
    FUELS,
    OBDReplayDecoder,
    OBDSettings,
    ReadingBuilder,
    can_frames,
    maf_fuel_rate_lph,
    mode01_requests,
    poll_groups,
    speed_density_maf_gps,
)
from drivers.samples import (
    DTCSample,
    FuelRateSource,
    LinkSample,
    LinkState,
    OBDReading,
    VehicleInfo,
)
from simulator.elm327 import DEFAULT_PIDS, ELM327
from simulator.state import VehicleState, running_van

STATE = running_van(dtcs=('P0301',))
START = ["ATRV", "0100", "0120", "0140", "0160", "0180", "01A0", "0902", "03", "07"]


def record(elm: ELM327, requests: list[str], state: VehicleState = STATE) -> list[tuple[str, str]]:
    return [(r, elm.handle(r, state)) for r in requests]


def test_capture_schedule_replays_to_the_live_samples() -> None:
    elm = ELM327()
    for command in ("ATZ", "ATE0", "ATH1", "ATL0"):
        elm.handle(command, STATE)
    decoder = OBDReplayDecoder(OBDSettings(fuel_type="diesel"))
    samples = []
    pairs = record(elm, [*START, "010D0C", "01045E100B0F", "01052F1F31A6"])
    for t, (request, reply) in enumerate(pairs):
        samples += decoder.feed(float(t), request, reply)
    voltage, info, dtcs, fast, medium, slow = samples
    assert voltage == OBDReading(0.0, voltage_v=14.1)
    assert isinstance(info, VehicleInfo)
    assert info.vin == STATE.vin and {"0C", "0D", "5E", "A6"} <= set(info.supported_pids)
    assert dtcs == DTCSample(9.0, ("P0301",), ())
    assert fast == OBDReading(10.0, speed_kmh=57.0, rpm=1650.25)
    assert isinstance(medium, OBDReading)
    assert medium.fuel_rate_lph == 6.5 and medium.fuel_rate_source == FuelRateSource.PID_5E
    assert isinstance(slow, OBDReading)
    assert slow.odometer_km == 123456.7 and slow.coolant_c == 88.0 and slow.runtime_s == 600.0
    assert decoder.errors == {}


def test_clone_capture_one_pid_per_request_with_echo_and_no_headers() -> None:
    elm = ELM327("clone-v2.1", pids=DEFAULT_PIDS - {0x5E})
    elm.handle("ATZ", STATE)  # echo stays on: the decoder must drop it
    decoder = OBDReplayDecoder(OBDSettings(fuel_type="petrol"))
    samples = []
    for request, reply in record(elm, ["0100", "010D", "010C", "0110"]):
        samples += decoder.feed(1.0, request, reply)
    assert samples[0] == OBDReading(1.0, speed_kmh=57.0)
    assert samples[1] == OBDReading(1.0, rpm=1650.25)
    assert isinstance(samples[2], OBDReading)
    assert samples[2].fuel_rate_source == FuelRateSource.MAF
    assert samples[2].fuel_rate_lph == pytest.approx(maf_fuel_rate_lph(12.34, FUELS["petrol"]))


def test_one_pid_rounds_use_only_the_best_supported_fuel_source() -> None:
    elm = ELM327("clone-v2.1")
    elm.handle("ATE0", STATE)
    decoder = OBDReplayDecoder(OBDSettings())
    samples = []
    for request, reply in record(
        elm, ["0100", "0120", "0140", "0160", "0104", "015E", "0110", "010B", "010F"]
    ):
        samples += decoder.feed(2.0, request, reply)
    sources = [s.fuel_rate_source for s in samples if isinstance(s, OBDReading)]
    assert sources == [None, FuelRateSource.PID_5E, None, None, None]


def test_ignition_off_and_garbage_are_counted_not_raised() -> None:
    elm = ELM327()
    elm.handle("ATE0", STATE)
    off = dataclasses.replace(STATE, ignition=False)
    decoder = OBDReplayDecoder(OBDSettings())
    pairs = record(elm, START, off)
    out = [s for request, reply in pairs for s in decoder.feed(0.0, request, reply)]
    assert out == [OBDReading(0.0, voltage_v=14.1)]  # no VehicleInfo without supported PIDs
    # In automatic protocol mode every request searches again, and fails, while the ECU sleeps.
    assert decoder.errors["unable_to_connect"] == len(START) - 1
    assert decoder.feed(1.0, "010D", "7E8 06 41 0G ZZ") == []
    assert decoder.feed(1.0, "010D", "\x00\xff") == []
    assert decoder.feed(1.0, "ATRV", "banana") == []
    assert decoder.feed(1.0, "XYZ", "41 0D 10") == []
    assert decoder.errors["garbage"] == 3
    assert decoder.errors["mismatch"] == 1


def test_link_events() -> None:
    decoder = OBDReplayDecoder(OBDSettings())
    (down,) = decoder.link(5.0, "unplug")
    assert isinstance(down, LinkSample) and down.state == LinkState.DOWN
    (up,) = decoder.link(7.0, "replug")
    assert isinstance(up, LinkSample) and up.state == LinkState.UP
    assert decoder.link(8.0, "explode") == []
    assert decoder.errors["unknown_link_event"] == 1


@settings(max_examples=200, deadline=None)
@given(request=st.text(max_size=20), reply=st.text(max_size=120))
def test_replay_never_raises_on_hostile_pairs(request: str, reply: str) -> None:
    decoder = OBDReplayDecoder(OBDSettings())
    out = decoder.feed(0.0, request, reply)
    assert all(isinstance(s, OBDReading | DTCSample | VehicleInfo) for s in out)
    command = "".join(request.split()).upper()
    if not out and not command.startswith("AT") and command not in ("03", "0100"):
        # Nothing came out of an ECU request: that must have been counted, unless it was a
        # well-formed mode 01 reply carrying nothing we read (support bitmaps, other PIDs).
        counted = sum(decoder.errors.values()) >= 1
        assert counted or (command.startswith("01") and _parses(reply, command)), decoder.errors


def _parses(reply: str, command: str) -> bool:
    try:
        parse_reply(reply, command)
    except AdapterReplyError:
        return False
    return True


def test_fuel_properties_and_speed_density() -> None:
    # 10 g/s of air in a petrol engine: 10 * 3600 / 14.7 / 745 = 3.287 L/h
    assert maf_fuel_rate_lph(10.0, FUELS["petrol"]) == pytest.approx(3.2872, abs=1e-4)
    assert maf_fuel_rate_lph(10.0, FUELS["diesel"]) == pytest.approx(2.9841, abs=1e-4)
    assert maf_fuel_rate_lph(10.0, FUELS["lpg"]) == pytest.approx(4.3011, abs=1e-4)
    # 2.0 L at 3000 rpm, 100 kPa, 25 °C, VE 1: 0.05 m3/s * 1.1685 kg/m3 = 58.43 g/s
    assert speed_density_maf_gps(100.0, 25.0, 3000.0, 2.0, 1.0) == pytest.approx(58.43, abs=0.01)


def test_speed_density_uses_recent_rpm_only() -> None:
    builder = ReadingBuilder(OBDSettings(), max_age_s=5.0)
    assert builder.build(0.0, {0x0C: bytes([0x19, 0xC9])}) == OBDReading(0.0, rpm=1650.25)
    fresh = builder.build(1.0, {0x0B: bytes([65]), 0x0F: bytes([70])})
    assert fresh is not None and fresh.fuel_rate_source == FuelRateSource.SPEED_DENSITY
    stale = builder.build(10.0, {0x0B: bytes([65]), 0x0F: bytes([70])})
    assert stale is not None and stale.fuel_rate_lph is None and stale.fuel_rate_source is None
    assert builder.build(11.0, {}) is None


def test_poll_plan_matches_the_capture_schedule() -> None:
    groups = poll_groups(OBDSettings())
    assert [(g.name, g.interval_s) for g in groups] == [
        ("fast", 0.5),
        ("medium", 1.0),
        ("slow", 10.0),
    ]
    assert [mode01_requests(g.pids, True) for g in groups] == [
        ["010D0C"],
        ["01045E100B0F"],
        ["01052F1F31A6"],
    ]
    assert mode01_requests((0x0D, 0x0C), False) == ["010D", "010C"]
    # Frames of the replies, for the ELM327's response-count digit; checked against the emulator.
    elm = ELM327()
    elm.handle("ATE0", STATE)
    elm.handle("ATH1", STATE)
    for group in groups:
        reply = elm.handle(mode01_requests(group.pids, True)[0], STATE)
        frames = [ln for ln in reply.split("\r") if ln.startswith("7E8")]
        assert can_frames(group.pids) == len(frames), group.name
    assert mode01_requests(range(1, 9), True) == ["01010203040506", "010708"]


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="fuel_type"):
        OBDSettings(fuel_type="hydrogen")
    with pytest.raises(ValueError, match="multi_pid"):
        OBDSettings(multi_pid="maybe")
    with pytest.raises(ValueError, match="positive"):
        OBDSettings(fast_hz=0.0)
