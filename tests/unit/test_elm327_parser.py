"""The sans-IO ELM327 reply parser: layouts, errors, decoders, and fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.elm327 import (
    PIDS,
    AdapterReplyError,
    ECUMessage,
    ReplyErrorKind,
    decode_bitmap,
    decode_dtcs,
    decode_mode01,
    decode_vin,
    parse_reply,
    parse_voltage,
)
from simulator.elm327 import ELM327
from simulator.state import running_van

STATE = running_van(dtcs=('P0301', 'C0123'), pending_dtcs=('P0420',))


def test_single_frame_with_and_without_headers_and_spaces() -> None:
    expected = [ECUMessage("7E8", bytes.fromhex("410D39"))]
    assert parse_reply("7E8 03 41 0D 39\r\r") == expected
    assert parse_reply("7E803410D39\r\r") == expected
    assert parse_reply("41 0D 39\r\r") == [ECUMessage("", bytes.fromhex("410D39"))]
    assert parse_reply("SEARCHING...\r\n41 0D 39\r\n\r\n>") == [
        ECUMessage("", bytes.fromhex("410D39"))
    ]
    assert parse_reply("010D\r41 0D 39\r\r", "010D")[0].data == bytes.fromhex("410D39")


def test_29_bit_can_headers_and_two_ecus() -> None:
    assert parse_reply("18 DA F1 10 03 41 0D 39\r") == [
        ECUMessage("18DAF110", bytes.fromhex("410D39"))
    ]
    both = parse_reply("7E8 06 41 00 BE 3F A8 13\r7E9 06 41 00 98 18 80 10\r")
    assert [m.ecu for m in both] == ["7E8", "7E9"]
    assert parse_reply("7E8 03 41 0D 39\rNO DATA\r")[0].data == bytes.fromhex("410D39")


def test_multi_frame_vin_both_layouts() -> None:
    framed = (
        "7E8 10 14 49 02 01 31 44 34\r7E8 21 47 50 30 30 52 35 35\r7E8 22 42 31 32 33 34 35 36\r"
    )
    (message,) = parse_reply(framed)
    assert decode_vin(message.data) == "1D4GP00R55B123456"
    segmented = "014\r0: 49 02 01 31 44 34\r1: 47 50 30 30 52 35 35\r2: 42 31 32 33 34 35 36\r"
    (message,) = parse_reply(segmented)
    assert decode_vin(message.data) == "1D4GP00R55B123456"


def test_multi_pid_reply_splits_by_pid_length() -> None:
    (message,) = parse_reply("7E8 10 0D 41 04 66 5E 00 82\r7E8 21 10 04 D2 0B 41 0F 46\r")
    values = decode_mode01(message.data)
    assert set(values) == {0x04, 0x5E, 0x10, 0x0B, 0x0F}
    assert PIDS[0x5E].decode(values[0x5E]) == 6.5
    assert PIDS[0x10].decode(values[0x10]) == 12.34
    assert PIDS[0x04].decode(values[0x04]) == pytest.approx(40.0, abs=0.2)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("NO DATA\r", ReplyErrorKind.NO_DATA),
        ("SEARCHING...\rUNABLE TO CONNECT\r", ReplyErrorKind.UNABLE_TO_CONNECT),
        ("STOPPED\r", ReplyErrorKind.STOPPED),
        ("BUS INIT: ...ERROR\r", ReplyErrorKind.BUS_INIT),
        ("CAN ERROR\r", ReplyErrorKind.CAN_ERROR),
        ("BUFFER FULL\r", ReplyErrorKind.BUFFER_FULL),
        ("?\r", ReplyErrorKind.UNKNOWN_COMMAND),
        ("ERR94\r", ReplyErrorKind.ADAPTER_ERROR),
        ("\r\r", ReplyErrorKind.SILENCE),
        ("7E8 06 41 0G ZZ\r", ReplyErrorKind.GARBAGE),
        ("7E8 10\r", ReplyErrorKind.GARBAGE),
        ("7E8 10 14 49 02 01 31 44 34\r", ReplyErrorKind.GARBAGE),  # cut short
        ("7E8 21 47 50 30 30 52 35 35\r", ReplyErrorKind.GARBAGE),  # no first frame
        ("\x00\x00\xff\r", ReplyErrorKind.GARBAGE),
    ],
)
def test_error_replies_are_typed(text: str, kind: ReplyErrorKind) -> None:
    with pytest.raises(AdapterReplyError) as info:
        parse_reply(text)
    assert info.value.kind == kind


def test_unknown_pid_inside_multi_pid_reply_is_garbage() -> None:
    with pytest.raises(AdapterReplyError) as info:
        decode_mode01(bytes.fromhex("410D39EE0102"))
    assert info.value.kind == ReplyErrorKind.GARBAGE
    with pytest.raises(AdapterReplyError) as info:
        decode_mode01(bytes.fromhex("430102"))
    assert info.value.kind == ReplyErrorKind.MISMATCH


def test_trouble_codes_can_and_legacy_layouts() -> None:
    assert decode_dtcs(bytes.fromhex("430203014123"), 3) == ("P0301", "C0123")
    assert decode_dtcs(bytes.fromhex("4300"), 3) == ()
    # K-line: no count byte, zero padding.
    assert decode_dtcs(bytes.fromhex("43030100000000"), 3) == ("P0301",)
    assert decode_dtcs(bytes.fromhex("47010420"), 7) == ("P0420",)


def test_bitmap_and_voltage() -> None:
    assert decode_bitmap(0x00, bytes.fromhex("00180001")) == {0x0C, 0x0D, 0x20}
    assert parse_voltage("12.6V\r\r") == 12.6
    assert parse_voltage("ATRV\r14V\r") == 14.0
    with pytest.raises(AdapterReplyError):
        parse_voltage("12,6V")
    with pytest.raises(AdapterReplyError):
        parse_voltage("")


@pytest.mark.parametrize("headers", ["ATH0", "ATH1"])
@pytest.mark.parametrize("spaces", ["ATS0", "ATS1"])
def test_every_emulated_pid_decodes_to_the_model_value(headers: str, spaces: str) -> None:
    elm = ELM327()
    for command in ("ATE0", headers, spaces, "0100"):
        elm.handle(command, STATE)
    expected = {
        "speed_kmh": 57.0,
        "rpm": 1650.25,
        "coolant_c": 88.0,
        "intake_c": 30.0,
        "maf_gps": 12.34,
        "map_kpa": 65.0,
        "fuel_rate_lph": 6.5,
        "runtime_s": 600.0,
        "odometer_km": 123456.7,
    }
    for pid, spec in PIDS.items():
        (message,) = parse_reply(elm.handle(f"01{pid:02X}", STATE))
        value = spec.decode(decode_mode01(message.data)[pid])
        if spec.name in expected:
            assert value == pytest.approx(expected[spec.name], abs=0.01), spec.name
    (message,) = parse_reply(elm.handle("0902", STATE))
    assert decode_vin(message.data) == STATE.vin


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=200))
def test_arbitrary_text_yields_messages_or_a_typed_error(text: str) -> None:
    try:
        messages = parse_reply(text)
    except AdapterReplyError as exc:
        assert isinstance(exc.kind, ReplyErrorKind)
        return
    assert messages, "a parse that does not raise returns at least one message"
    for message in messages:
        assert isinstance(message.data, bytes) and message.data
        with contextlib.suppress(AdapterReplyError):
            decode_mode01(message.data)
        with contextlib.suppress(AdapterReplyError):
            decode_vin(message.data)
    with contextlib.suppress(AdapterReplyError):
        assert 0.0 <= parse_voltage(text) <= 40.0


hex_line = st.lists(st.sampled_from("0123456789ABCDEF "), min_size=1, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(hex_line, st.sampled_from(["NO DATA", "0:", "014", ">", "?"])), max_size=6)
)
def test_hex_shaped_replies_never_raise_anything_but_typed_errors(lines: list[str]) -> None:
    try:
        for message in parse_reply("\r".join(lines)):
            for service in (3, 7):
                with contextlib.suppress(AdapterReplyError):
                    decode_dtcs(message.data, service)
            decode_mode01(message.data)
    except AdapterReplyError as exc:
        assert exc.kind in ReplyErrorKind


@settings(max_examples=150, deadline=None)
@given(
    speed=st.floats(0, 255),
    rpm=st.floats(0, 16383),
    maf=st.floats(0, 655),
    fuel=st.floats(0, 3276),
    headers=st.booleans(),
)
def test_emulator_round_trip_within_one_lsb(
    speed: float, rpm: float, maf: float, fuel: float, headers: bool
) -> None:
    state = dataclasses.replace(STATE, speed_kmh=speed, rpm=rpm, maf_gps=maf, fuel_rate_lph=fuel)
    elm = ELM327()
    for command in ("ATE0", "ATH1" if headers else "ATH0", "0100"):
        elm.handle(command, state)
    values: dict[int, bytes] = {}
    for message in parse_reply(elm.handle("010D0C105E", state)):
        values.update(decode_mode01(message.data))
    assert PIDS[0x0D].decode(values[0x0D]) == pytest.approx(speed, abs=0.5)
    assert PIDS[0x0C].decode(values[0x0C]) == pytest.approx(rpm, abs=0.125)
    assert PIDS[0x10].decode(values[0x10]) == pytest.approx(maf, abs=0.005)
    assert PIDS[0x5E].decode(values[0x5E]) == pytest.approx(fuel, abs=0.025)
