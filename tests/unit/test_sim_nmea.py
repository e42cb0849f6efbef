"""The simulator's own NMEA encoder, checked by an independent parser (pynmea2)."""

from __future__ import annotations

import datetime as dt

import pynmea2
from hypothesis import given
from hypothesis import strategies as st

from simulator.nmea import Epoch, Satellite, Talker, checksum, encode_epoch, frame

UTC = dt.datetime(2026, 3, 2, 7, 30, 5, 250000, tzinfo=dt.UTC)


def _parse_all(talker: Talker, epoch: Epoch) -> list[pynmea2.NMEASentence]:
    return [pynmea2.parse(frame(body).strip(), check=True) for body in encode_epoch(talker, epoch)]


def test_checksum_matches_the_nmea_reference_example() -> None:
    # The classic example sentence from the NMEA literature, checksum 0x47.
    body = "GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
    assert checksum(body) == 0x47
    assert frame(body) == f"${body}*47\r\n"
    assert frame(body, corrupt=True) != frame(body)


@given(
    lat=st.floats(-84.9, 84.9),
    lon=st.floats(-179.9, 179.9),
    speed_knots=st.floats(0, 150),
    course=st.floats(0, 359.99),
    alt_m=st.floats(-100, 3000),
)
def test_every_fix_sentence_parses_with_pynmea2_and_round_trips(
    lat: float, lon: float, speed_knots: float, course: float, alt_m: float
) -> None:
    sats = tuple(Satellite(p, 45, 120, 40) for p in (2, 5, 7, 9, 13))
    epoch = Epoch(
        UTC, True, lat, lon, alt_m, 47.0, speed_knots, course, (2, 5, 7, 9, 13), 1.1, 1.8, 1.4, sats
    )
    sentences = _parse_all(Talker.GP, epoch)
    rmc, vtg, gga = sentences[0], sentences[1], sentences[2]
    assert isinstance(rmc, pynmea2.RMC) and isinstance(gga, pynmea2.GGA)
    assert isinstance(vtg, pynmea2.VTG)
    assert rmc.status == "A"
    assert abs(rmc.latitude - lat) < 1e-6 and abs(rmc.longitude - lon) < 1e-6
    assert abs(gga.latitude - lat) < 1e-6 and abs(gga.longitude - lon) < 1e-6
    assert abs(float(rmc.spd_over_grnd) - speed_knots) < 1e-3
    assert abs(float(gga.altitude) - alt_m) < 0.051
    assert rmc.datetime.replace(tzinfo=dt.UTC) == UTC.replace(microsecond=250000)
    assert int(gga.num_sats) == 5 and float(gga.horizontal_dil) == 1.1


def test_no_fix_before_first_fix_has_no_time_and_pynmea2_accepts_it() -> None:
    sentences = _parse_all(Talker.GP, Epoch(utc=None, fix=False))
    rmc, gga = sentences[0], sentences[2]
    assert rmc.status == "V" and rmc.timestamp is None and rmc.latitude == 0.0
    assert gga.gps_qual == 0
    assert sentences[-1].num_sv_in_view == "00"


def test_fix_lost_keeps_the_time_running() -> None:
    rmc = _parse_all(Talker.GP, Epoch(utc=UTC, fix=False))[0]
    assert rmc.status == "V"
    assert rmc.timestamp.replace(tzinfo=None) == dt.time(7, 30, 5, 250000)


def test_gn_talker_writes_gn_fixes_and_gsv_per_constellation() -> None:
    sats = (
        Satellite(2, 40, 10, 40, "GP"),
        Satellite(5, 30, 90, 38, "GP"),
        Satellite(65, 50, 200, 41, "GL"),
        Satellite(72, 20, 300, 33, "GL"),
    )
    epoch = Epoch(
        UTC, True, 51.34, 12.37, 120.0, 47.0, 10.0, 90.0, (2, 5, 65, 72), 1.0, 1.6, 1.3, sats
    )
    sentences = _parse_all(Talker.GN, epoch)
    talkers = [(s.talker, s.sentence_type) for s in sentences]
    assert talkers[:3] == [("GN", "RMC"), ("GN", "VTG"), ("GN", "GGA")]
    assert ("GN", "GSA") in talkers and ("GP", "GSV") in talkers and ("GL", "GSV") in talkers
    gsa = [s for s in sentences if s.sentence_type == "GSA"]
    assert [s.sv_id01 for s in gsa] == ["02", "65"]


def test_minutes_never_print_as_sixty() -> None:
    epoch = Epoch(UTC, True, 51.99999999999, 12.99999999999, 0.0)
    rmc = pynmea2.parse(frame(encode_epoch(Talker.GP, epoch)[0]).strip(), check=True)
    assert rmc.lat.startswith("5200.00000") and rmc.lon.startswith("01300.00000")
