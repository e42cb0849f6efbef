"""GNSS decoder benchmark: sentences per second, CPU per hour of 10 Hz input, pynmea2 as baseline.

Run: ``.venv/bin/python bench/bench_gnss.py``. Figures, not assertions. pynmea2's ``parse`` is
lazy (it splits fields and converts nothing until an attribute is read), so we also time it with
the fields a fix needs read out; our figure includes framing, checksums, range checks and epoch
assembly.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pynmea2

from drivers.nmea import NMEADecoder

RATE_HZ = 10
SENTENCES_PER_EPOCH = 5  # RMC, VTG, GGA, GSA, GSV
EPOCHS = 6000  # ten minutes at 10 Hz
REPEATS = 3


def _frame(body: str) -> str:
    csum = 0
    for ch in body.encode("ascii"):
        csum ^= ch
    return f"${body}*{csum:02X}\r\n"


def make_stream(epochs: int = EPOCHS) -> list[str]:
    """A moving van at 10 Hz: five sentences per epoch, as a u-blox receiver sends them."""
    start = dt.datetime(2025, 6, 2, 8, 0, 0)
    lines: list[str] = []
    for n in range(epochs):
        utc = start + dt.timedelta(seconds=n / RATE_HZ)
        t = utc.strftime("%H%M%S") + f".{utc.microsecond // 10000:02d}"
        d = utc.strftime("%d%m%y")
        lat = f"5230.{12345 + n:05d}"
        lon = f"01324.{54321 + n:05d}"
        lines += [
            _frame(f"GNRMC,{t},A,{lat},N,{lon},E,27.214,91.30,{d},,,A,V"),
            _frame("GNVTG,91.30,T,,M,27.214,N,50.400,K,A"),
            _frame(f"GNGGA,{t},{lat},N,{lon},E,1,12,0.79,41.3,M,47.0,M,,"),
            _frame("GNGSA,A,3,02,05,07,09,13,15,18,20,,,,,1.32,0.79,1.06,1"),
            _frame("GPGSV,3,1,11,02,45,120,42,05,60,200,44,07,30,310,38,09,15,050,33,0"),
        ]
    return lines


def _best_cpu_s(fn: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run() -> dict[str, float]:
    lines = make_stream()
    data = "".join(lines).encode("ascii")
    n = len(lines)
    chunk = 512  # about what one serial read returns at 10 Hz

    def ours() -> None:
        decoder = NMEADecoder()
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk], 0.0)
        decoder.flush()
        assert decoder.stats()["fixes"] >= EPOCHS - 1

    def bare_pynmea2() -> None:
        for line in lines:
            pynmea2.parse(line.strip())

    def pynmea2_with_fields() -> None:
        # What a decoder built on pynmea2 would also pay: converting the fields a fix needs.
        for line in lines:
            msg = pynmea2.parse(line.strip())
            kind = msg.sentence_type
            if kind == "RMC":
                _ = (
                    msg.latitude,
                    msg.longitude,
                    msg.datestamp,
                    msg.timestamp,
                    msg.spd_over_grnd,
                    msg.true_course,
                    msg.status,
                )
            elif kind == "GGA":
                _ = (
                    msg.latitude,
                    msg.longitude,
                    msg.gps_qual,
                    msg.num_sats,
                    msg.horizontal_dil,
                    msg.altitude,
                )
            elif kind == "GSA":
                _ = (msg.mode_fix_type, msg.pdop, msg.hdop)

    ours_s = _best_cpu_s(ours)
    pynmea2_s = _best_cpu_s(bare_pynmea2)
    fields_s = _best_cpu_s(pynmea2_with_fields)
    sentences_per_hour = RATE_HZ * SENTENCES_PER_EPOCH * 3600
    return {
        "sentences": float(n),
        "ours_sentences_per_s": n / ours_s,
        "pynmea2_parse_sentences_per_s": n / pynmea2_s,
        "ratio_ours_to_pynmea2": pynmea2_s / ours_s,
        "pynmea2_with_fields_sentences_per_s": n / fields_s,
        "ratio_ours_to_pynmea2_with_fields": fields_s / ours_s,
        "ours_cpu_s_per_hour_10hz": ours_s / n * sentences_per_hour,
        "pynmea2_cpu_s_per_hour_10hz": pynmea2_s / n * sentences_per_hour,
    }


def main() -> None:
    results = run()
    print(f"sentences decoded per run:            {results['sentences']:.0f}")
    print(
        f"our decoder (framing+checksum+epochs): {results['ours_sentences_per_s']:,.0f} sentences/s"
    )
    print(
        f"pynmea2.parse alone (baseline):        "
        f"{results['pynmea2_parse_sentences_per_s']:,.0f} sentences/s"
    )
    print(f"ratio ours / pynmea2.parse:            {results['ratio_ours_to_pynmea2']:.2f}x")
    print(
        f"pynmea2.parse + reading fix fields:    "
        f"{results['pynmea2_with_fields_sentences_per_s']:,.0f} sentences/s "
        f"(ours {results['ratio_ours_to_pynmea2_with_fields']:.2f}x that)"
    )
    print(
        f"CPU per hour of 10 Hz input (5 sentences/epoch): ours "
        f"{results['ours_cpu_s_per_hour_10hz']:.2f} s, pynmea2.parse alone "
        f"{results['pynmea2_cpu_s_per_hour_10hz']:.2f} s"
    )


if __name__ == "__main__":
    main()
