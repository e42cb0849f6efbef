"""The ELM327 emulator, sans-IO: AT commands, formatting, mode 01/03/07/09, variants."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from simulator.elm327 import ELM327
from simulator.model import VehicleModel
from simulator.scenario import parse_scenario
from simulator.state import running_van

STATE = running_van(dtcs=('P0301', 'C0123'), pending_dtcs=('P0420',))


def configured(variant: str = "v1.5") -> ELM327:
    """An adapter set up the way python-obd leaves it, with the protocol already found."""
    elm = ELM327(variant)
    for command in ("ATZ", "ATE0", "ATH1", "ATL0", "ATSP0"):
        elm.handle(command, STATE)
    elm.handle("0100", STATE)
    return elm


def test_reset_prints_version_and_echo_reflects_setting_before_the_command() -> None:
    elm = ELM327()
    assert elm.handle("ATZ", STATE) == "ATZ\r\rELM327 v1.5\r\r>"
    # ATE0 is still echoed: the chip echoes while it receives.
    assert elm.handle("ATE0", STATE) == "ATE0\rOK\r\r>"
    assert elm.handle("ATI", STATE) == "ELM327 v1.5\r\r>"
    assert elm.handle("ATL1", STATE) == "OK\r\n\r\n>"
    assert elm.handle("AT@1", STATE) == "OBDII to RS232 Interpreter\r\n\r\n>"


def test_at_commands_that_tools_send_are_accepted() -> None:
    elm = ELM327()
    for command in ("AT ST 32", "ATAT2", "ATAT1", "AT SH 7E0", "ATS0", "ATH1", "ATSP6", "ATD"):
        assert "OK" in elm.handle(command, STATE), command
    assert elm.handle("ATRV", STATE).endswith("14.1V\r\r>")
    assert elm.handle("ATXYZ", STATE).endswith("?\r\r>")
    assert elm.handle("\x7f\x7f", STATE).endswith("?\r\r>")


def test_first_request_after_reset_searches_then_answers() -> None:
    elm = ELM327()
    elm.handle("ATE0", STATE)
    assert elm.handle("010D", STATE) == "SEARCHING...\r41 0D 39\r\r>"
    assert elm.handle("010D", STATE) == "41 0D 39\r\r>"
    assert elm.handle("ATDPN", STATE) == "A6\r\r>"


def test_pinned_protocols_other_than_can_11_500_fail() -> None:
    elm = ELM327()
    elm.handle("ATE0", STATE)
    elm.handle("ATSP3", STATE)
    assert elm.handle("0100", STATE) == "BUS INIT: ...ERROR\r\r>"
    elm.handle("ATSP8", STATE)
    assert elm.handle("0100", STATE) == "NO DATA\r\r>"
    elm.handle("ATTP1", STATE)  # "try": falls back to a search, which finds CAN 11/500
    assert elm.handle("010D", STATE) == "SEARCHING...\r41 0D 39\r\r>"
    elm.handle("ATSP6", STATE)
    assert elm.handle("010D", STATE) == "41 0D 39\r\r>"
    assert elm.handle("ATDPN", STATE) == "6\r\r>"


def test_ignition_off_answers_no_data_but_battery_voltage() -> None:
    off = dataclasses.replace(STATE, ignition=False, battery_v=12.4)
    elm = configured()
    assert elm.handle("010C", off) == "NO DATA\r\r>"
    assert elm.handle("ATRV", off) == "12.4V\r\r>"
    fresh = ELM327()
    fresh.handle("ATE0", off)
    assert fresh.handle("0100", off) == "SEARCHING...\rUNABLE TO CONNECT\r\r>"


def test_single_pid_values_follow_sae_j1979_scaling() -> None:
    elm = configured()
    assert elm.handle("010C", STATE) == "7E8 04 41 0C 19 C9\r\r>"  # 1650.25 rpm * 4 = 0x19C9
    assert elm.handle("010D", STATE) == "7E8 03 41 0D 39\r\r>"
    assert elm.handle("015E", STATE) == "7E8 04 41 5E 00 82\r\r>"  # 6.5 L/h * 20
    assert elm.handle("01A6", STATE) == "7E8 06 41 A6 00 12 D6 87\r\r>"  # 1234567 hm


def test_multi_pid_request_is_answered_in_one_reply() -> None:
    elm = configured()
    assert elm.handle("010D0C", STATE) == "7E8 06 41 0D 39 0C 19 C9\r\r>"
    reply = elm.handle("01045E100B0F", STATE)
    assert reply == "7E8 10 0D 41 04 66 5E 00 82\r7E8 21 10 04 D2 0B 41 0F 46\r\r>"


def test_more_than_six_pids_do_not_fit_one_can_frame() -> None:
    assert configured().handle("010D0C04050F100B", STATE) == "?\r\r>"


def test_clone_answers_only_the_first_pid_of_a_multi_pid_request() -> None:
    elm = configured("clone-v2.1")
    assert elm.handle("ATI", STATE) == "ELM327 v2.1\r\r>"
    assert elm.handle("010D0C", STATE) == "7E8 03 41 0D 39\r\r>"


def test_response_count_digit_and_empty_line_repeat() -> None:
    elm = configured()
    assert elm.handle("010D1", STATE) == "7E8 03 41 0D 39\r\r>"
    assert elm.handle("", STATE) == "7E8 03 41 0D 39\r\r>"


def test_trouble_codes_and_vin() -> None:
    elm = configured()
    assert elm.handle("03", STATE) == "7E8 06 43 02 03 01 41 23\r\r>"
    assert elm.handle("07", STATE) == "7E8 04 47 01 04 20\r\r>"
    vin = elm.handle("0902", STATE)
    assert vin.startswith("7E8 10 14 49 02 01 57 46 30\r7E8 21 ")
    elm.handle("ATH0", STATE)
    segmented = elm.handle("0902", STATE)
    assert segmented.startswith("014\r0: 49 02 01 57 46 30\r1: ")


def test_support_bitmaps_chain_and_restricted_pid_sets() -> None:
    elm = ELM327(pids={0x0C, 0x0D})
    elm.handle("ATE0", STATE)
    elm.handle("0100", STATE)
    assert elm.handle("0100", STATE) == "41 00 00 18 00 00\r\r>"
    assert elm.handle("0120", STATE) == "NO DATA\r\r>"
    assert elm.handle("015E", STATE) == "NO DATA\r\r>"
    with pytest.raises(ValueError, match="cannot answer"):
        ELM327(pids={0x99})
    with pytest.raises(ValueError, match="unknown ELM327 variant"):
        ELM327("v9")


def test_noisy_variant_garbles_every_fifth_ecu_reply() -> None:
    elm = configured("noisy-v1.5")
    replies = [elm.handle("010D", STATE) for _ in range(20)]
    good = [r for r in replies if r == "7E8 03 41 0D 39\r\r>"]
    assert 14 <= len(good) <= 17


def test_throttle_ambient_and_oil_answer_their_own_values() -> None:
    # Throttle 24 %, ambient 18 C and oil 94 C; load 40 %, intake 30 C and coolant 88 C differ,
    # so a stand-in for any of them would show.
    elm = configured()
    assert elm.handle("0111", STATE) == "7E8 03 41 11 3D\r\r>"  # 24 % * 2.55 = 61
    assert elm.handle("0146", STATE) == "7E8 03 41 46 3A\r\r>"  # 18 + 40
    assert elm.handle("015C", STATE) == "7E8 03 41 5C 86\r\r>"  # 94 + 40
    assert elm.handle("0104", STATE) == "7E8 03 41 04 66\r\r>"
    assert elm.handle("010F", STATE) == "7E8 03 41 0F 46\r\r>"


def test_six_pids_are_the_most_one_request_carries() -> None:
    elm = configured()
    # 15 bytes of reply: a first frame with 6, consecutive frames with 7 and 2 (padded).
    assert elm.handle("010D0C04050F10", STATE) == (
        "7E8 10 0F 41 0D 39 0C 19 C9\r"
        "7E8 21 04 66 05 80 0F 46 10\r"
        "7E8 22 04 D2 00 00 00 00 00\r\r>"
    )
    elm.handle("ATH0", STATE)
    assert elm.handle("010D0C04050F10", STATE) == (
        "00F\r0: 41 0D 39 0C 19 C9\r1: 04 66 05 80 0F 46 10\r2: 04 D2\r\r>"
    )
    # Seven PIDs need 8 data bytes, which no single CAN frame carries: the chip refuses the
    # request at once, without bus traffic (and SAE J1979 allows six PIDs per request).
    requests = elm.ecu_requests
    assert elm.handle("010D0C04050F100B", STATE) == "?\r\r>"
    assert elm.ecu_requests == requests
    assert elm.last_reply_s < elm.latency_s


def test_a_response_count_digit_ends_the_reply_after_that_many_frames() -> None:
    elm = configured()
    full = elm.handle("010D0C04050F103", STATE)
    assert full.count("7E8") == 3
    # A digit too small cuts the reply short, as on the real chip.
    assert elm.handle("010D0C04050F102", STATE) == (
        "7E8 10 0F 41 0D 39 0C 19 C9\r7E8 21 04 66 05 80 0F 46 10\r\r>"
    )


BYTE_S = 10 / 38400  # one byte at 38400 baud, 8N1


def test_reply_time_is_serial_bytes_ecu_latency_and_can_frames() -> None:
    elm = configured()
    elm.handle("010D1", STATE)
    # 6 bytes in ("010D1" CR), 30 ms to the ECU's frame, 18 bytes out ("7E8 03 41 0D 39" CR CR >).
    assert elm.last_reply_s == pytest.approx(6 * BYTE_S + 0.030 + 18 * BYTE_S)
    elm.handle("01045E100B0F2", STATE)
    # Two frames (first, flow control, consecutive: 2 ms); the 56 bytes of the two lines take
    # longer than that at 38400 baud, so the serial line sets the pace.
    assert elm.last_reply_s == pytest.approx(14 * BYTE_S + 0.030 + 56 * BYTE_S + 2 * BYTE_S)
    elm.handle("ATS0", STATE)
    elm.handle("01045E100B0F2", STATE)
    assert elm.last_reply_s == pytest.approx(14 * BYTE_S + 0.030 + 40 * BYTE_S + 2 * BYTE_S)
    fast = ELM327(baud=115200)
    fast.handle("ATE0", STATE)
    fast.handle("0100", STATE)
    fast.handle("010D1", STATE)
    assert fast.last_reply_s == pytest.approx((6 + 11) * 10 / 115200 + 0.030)
    # AT commands never wait for the bus: only their bytes take time.
    elm.handle("ATRV", STATE)
    assert elm.last_reply_s == pytest.approx((5 + 8) * BYTE_S)


def test_atst_and_atat_set_the_wait_for_more_replies() -> None:
    elm = ELM327()
    elm.handle("ATE0", STATE)
    elm.handle("ATSP6", STATE)
    one = 5 * BYTE_S + 0.030  # "010D" CR in, the ECU's frame
    out = 2 * BYTE_S  # the empty line and the prompt after the wait
    # Nothing measured yet after a reset: the first reply waits the whole ATST (200 ms).
    elm.handle("010D", STATE)
    assert elm.last_reply_s == pytest.approx(one + 0.200 + out)
    elm.handle("010D", STATE)  # adaptive timing 1 (the default): 2 x 30 ms + 8 ms
    assert elm.last_reply_s == pytest.approx(one + 0.068 + out)
    elm.handle("ATAT2", STATE)
    elm.handle("010D", STATE)  # more aggressive: 30 ms + 4 ms
    assert elm.last_reply_s == pytest.approx(one + 0.034 + out)
    elm.handle("ATAT0", STATE)
    elm.handle("010D", STATE)  # off: ATST every time
    assert elm.last_reply_s == pytest.approx(one + 0.200 + out)
    elm.handle("ATST19", STATE)  # 25 x 4 ms
    elm.handle("010D", STATE)
    assert elm.last_reply_s == pytest.approx(one + 0.100 + out)
    elm.handle("ATAT1", STATE)
    elm.handle("ATST0A", STATE)  # ATST caps adaptive timing too: 40 ms < 68 ms
    elm.handle("010D", STATE)
    assert elm.last_reply_s == pytest.approx(one + 0.040 + out)
    # A count digit that is satisfied needs no wait, whatever the timing settings.
    elm.handle("010D1", STATE)
    assert elm.last_reply_s == pytest.approx(6 * BYTE_S + 0.030 + 11 * BYTE_S)
    elm.handle("ATST00", STATE)  # 00 restores the default
    elm.handle("ATAT0", STATE)
    elm.handle("010D", STATE)
    assert elm.last_reply_s == pytest.approx(one + 0.200 + out)


def test_no_data_comes_after_atst_in_every_adaptive_mode() -> None:
    elm = ELM327(pids={0x0D})
    for command in ("ATE0", "ATSP6", "0100", "0100"):
        elm.handle(command, STATE)
    for mode in ("ATAT0", "ATAT1", "ATAT2"):
        elm.handle(mode, STATE)
        assert elm.handle("015E1", STATE) == "NO DATA\r\r>"
        assert elm.last_reply_s == pytest.approx(6 * BYTE_S + 0.200 + 10 * BYTE_S), mode
    elm.handle("ATST0A", STATE)
    elm.handle("015E1", STATE)
    assert elm.last_reply_s == pytest.approx(6 * BYTE_S + 0.040 + 10 * BYTE_S)
    elm.handle("ATZ", STATE)  # a reset restores ATST and adaptive timing
    assert (elm.timeout_st, elm.adaptive) == (0x32, 1)


def test_clearing_codes_resets_the_distance_since_they_were_cleared() -> None:
    elm = configured()
    assert elm.handle("0131", STATE) == "7E8 04 41 31 04 D2\r\r>"  # 1234 km
    assert elm.handle("04", STATE) == "7E8 01 44\r\r>"
    assert elm.handle("03", STATE) == "7E8 02 43 00\r\r>"
    assert elm.handle("07", STATE) == "7E8 02 47 00\r\r>"
    assert elm.handle("0131", STATE) == "7E8 04 41 31 00 00\r\r>"
    driven = dataclasses.replace(
        STATE, odometer_km=STATE.odometer_km + 12.4, distance_since_clear_km=1246.4
    )
    assert elm.handle("0131", driven) == "7E8 04 41 31 00 0C\r\r>"
    # The code the car healed and set again shows again; a new code shows at once.
    elm.handle("03", dataclasses.replace(driven, dtcs=("C0123",)))
    again = dataclasses.replace(driven, dtcs=("C0123", "P0301", "P0171"))
    assert elm.handle("03", again) == "7E8 06 43 02 03 01 01 71\r\r>"
    # An adapter reset does not touch the ECU's memory.
    elm.handle("ATZ", STATE)
    for command in ("ATE0", "ATH1", "0100"):
        elm.handle(command, STATE)
    assert elm.handle("0131", driven) == "7E8 04 41 31 00 0C\r\r>"


def test_distance_since_codes_cleared_saturates_and_is_not_the_odometer() -> None:
    elm = configured()
    far = dataclasses.replace(STATE, distance_since_clear_km=70000.0, odometer_km=400000.0)
    assert elm.handle("0131", far) == "7E8 04 41 31 FF FF\r\r>"  # J1979: stays at 65535
    near = dataclasses.replace(STATE, distance_since_clear_km=3.4, odometer_km=400000.0)
    assert elm.handle("0131", near) == "7E8 04 41 31 00 03\r\r>"


# A warm-up drive on a straight 12 km road; a scan tool clears every code at t = 300 s.
CLEARED_ON_THE_ROAD = """
[vehicle]
ambient_c = 6.0
coolant_c = 30.0
odometer_km = 91000.0
[route]
waypoints = [[52.0, 13.0], [52.0, 13.175]]
[[plan]]
do = "idle"
duration_s = 60
[[plan]]
do = "drive"
distance_m = 10000
speed_kmh = 80
[[dtc]]
t_s = 20
set = ["P0301"]
[[dtc]]
t_s = 300
clear = "all"
"""


def test_pids_follow_the_vehicle_model_through_a_drive_and_a_code_clear() -> None:
    model = VehicleModel(parse_scenario(tomllib.loads(CLEARED_ON_THE_ROAD), Path("t.toml")))
    elm = ELM327()
    for command in ("ATE0", "ATH0", "ATS0", "0100"):
        elm.handle(command, model.state_at(0.0))

    def read(pid: int, t_s: float) -> int:
        reply = elm.handle(f"01{pid:02X}", model.state_at(t_s)).split("\r")[0]
        assert reply.startswith(f"41{pid:02X}"), reply
        return int(reply[4:], 16)

    before, after = model.state_at(299.9), model.state_at(400.0)
    assert read(0x31, 299.9) == round(before.distance_since_clear_km)
    assert before.distance_since_clear_km == pytest.approx(before.odometer_km - 91000.0)
    assert before.distance_since_clear_km > 4.0  # several km driven before the clear
    cleared_at_km = model.state_at(300.0).odometer_km
    assert read(0x31, 300.1) == 0
    assert read(0x31, 400.0) == round(after.odometer_km - cleared_at_km)
    assert after.odometer_km - cleared_at_km > 1.5
    for t_s in (30.0, 120.0, 400.0):  # idling cold, accelerating, cruising warmer
        state = model.state_at(t_s)
        assert read(0x46, t_s) == round(state.ambient_c + 40) == 46
        assert read(0x5C, t_s) == round(state.oil_c + 40)
        assert read(0x11, t_s) == round(state.throttle_pct * 2.55)
        # Their own values, not the stand-ins the emulator once answered.
        assert abs(state.intake_c - state.ambient_c) >= 3.5
        assert abs(state.throttle_pct - state.engine_load_pct) >= 1.0
    warm = model.state_at(400.0)
    assert abs(warm.oil_c - warm.coolant_c) >= 1.0
