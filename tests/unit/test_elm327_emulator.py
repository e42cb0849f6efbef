"""The ELM327 emulator, sans-IO: AT commands, formatting, mode 01/03/07/09, variants."""

from __future__ import annotations

import dataclasses

import pytest

from simulator.elm327 import ELM327
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
