"""GNSS receiver output: valid NMEA near the true route, with the faults the scenario asks for."""

from __future__ import annotations

import math
from functools import cache

import pynmea2

from simulator.model import VehicleModel
from simulator.nmea import Talker
from simulator.scenario import load_scenario
from simulator.talker import Receiver


@cache
def model(name: str) -> VehicleModel:
    return VehicleModel(load_scenario(name))


def _lines(data: bytes) -> list[str]:
    return [line for line in data.decode("latin-1").split("\r\n") if line]


def _drive(
    name: str, rate_hz: float = 1.0, talker: Talker = Talker.GP, seconds: float | None = None
) -> tuple[Receiver, list[tuple[float, list[str]]]]:
    m = model(name)
    receiver = Receiver(m.scenario.gnss, talker, rate_hz, m.scenario.seed)
    epochs = []
    end = m.duration_s if seconds is None else seconds
    n = 0
    while n / rate_hz <= end:
        t = n / rate_hz
        epochs.append((t, _lines(receiver.epoch_bytes(m.state_at(t)))))
        n += 1
    return receiver, epochs


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    d_lat = math.radians(lat2 - lat1) * 6_371_000.0
    d_lon = math.radians(lon2 - lon1) * 6_371_000.0 * math.cos(math.radians(lat1))
    return math.hypot(d_lat, d_lon)


def test_urban_sentences_parse_with_checksums_and_follow_the_route() -> None:
    m = model("urban_delivery")
    _, epochs = _drive("urban_delivery")
    errors = []
    for t, lines in epochs:
        parsed = [pynmea2.parse(line, check=True) for line in lines]
        rmc = parsed[0]
        assert isinstance(rmc, pynmea2.RMC) and rmc.status == "A"
        truth = m.state_at(t)
        errors.append(_metres(truth.lat, truth.lon, rmc.latitude, rmc.longitude))
        utc = rmc.datetime.replace(tzinfo=truth.utc.tzinfo)
        assert abs((utc - truth.utc).total_seconds()) < 0.01
        if truth.speed_kmh > 20:
            assert abs(float(rmc.spd_over_grnd) * 1.852 - truth.speed_kmh) < 1.5
    assert max(errors) < 20.0  # noise, HDOP-scaled, a few metres
    assert 0.3 < sum(errors) / len(errors) < 8.0  # but there is noise


def test_parked_van_jitters_a_few_metres_with_tiny_speeds() -> None:
    m = model("ignition_cycles")  # parked for the first 600 s
    _, epochs = _drive("ignition_cycles", seconds=590)
    true = m.state_at(0)
    offsets = []
    for _, lines in epochs:
        rmc = pynmea2.parse(lines[0], check=True)
        offsets.append(_metres(true.lat, true.lon, rmc.latitude, rmc.longitude))
        assert float(rmc.spd_over_grnd) < 0.6
    assert max(offsets) < 25.0
    assert max(offsets) - min(offsets) > 1.0  # it wanders: multipath, not a frozen point


def test_cold_start_has_no_fix_and_no_time_for_40_s() -> None:
    _, epochs = _drive("cold_start", seconds=60)
    for t, lines in epochs:
        rmc = pynmea2.parse(lines[0], check=True)
        gga = pynmea2.parse(lines[2], check=True)
        if t < 40:
            assert rmc.status == "V" and rmc.timestamp is None and gga.gps_qual == 0
        else:
            assert rmc.status == "A" and rmc.timestamp is not None and gga.gps_qual == 1


def test_tunnels_lose_the_fix_and_faults_arrive_as_asked() -> None:
    m = model("tunnels")
    receiver, epochs = _drive("tunnels")
    bad = 0
    glued = 0
    for t, lines in epochs:
        for line in lines:
            start = line.find("$")
            assert start >= 0
            glued += start > 0
            try:
                sentence = pynmea2.parse(line[start:], check=True)
            except pynmea2.ChecksumError:
                bad += 1
                continue
            if isinstance(sentence, pynmea2.RMC):
                assert (sentence.status == "A") == m.gnss_fix_at(t)
    assert bad == receiver.corrupted == 3
    assert glued == 2 and receiver.garbage_bytes == 264


def test_ten_hertz_sends_fixes_every_epoch_and_satellites_once_a_second() -> None:
    _, epochs = _drive("highway", rate_hz=10.0, seconds=120)
    fixes = [e for e in epochs if e[1][0].startswith("$GPRMC")]
    gsv_epochs = [e for e in epochs if any(line.startswith("$GPGSV") for line in e[1])]
    assert len(fixes) == len(epochs) == 1201
    assert len(gsv_epochs) == 121
    stamps = [pynmea2.parse(e[1][0]).timestamp for e in epochs[100:103]]
    assert [s.microsecond for s in stamps] == [0, 100000, 200000]


def test_gn_talker() -> None:
    _, epochs = _drive("highway", talker=Talker.GN, seconds=90)
    talkers = {pynmea2.parse(line, check=True).identifier()[:5] for line in epochs[-1][1]}
    assert {"GNRMC", "GNGGA", "GNVTG", "GNGSA", "GPGSV", "GLGSV"} <= talkers


def test_same_seed_same_bytes() -> None:
    a = _drive("tunnels", seconds=200)[1]
    b = _drive("tunnels", seconds=200)[1]
    assert a == b
