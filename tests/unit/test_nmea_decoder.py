"""NMEA decoder behaviour on the messes real receivers send."""

from __future__ import annotations

import datetime as dt
from typing import TypedDict, Unpack

import pytest

from drivers.nmea import MAX_LINE_BYTES, Epoch, NMEADecoder, NoFixReason
from drivers.samples import FixMode, FixQuality, GNSSFix


def frame(body: str, *, corrupt: bool = False) -> bytes:
    csum = 0
    for ch in body.encode("ascii"):
        csum ^= ch
    return f"${body}*{csum ^ (0x21 if corrupt else 0):02X}\r\n".encode("ascii")


RMC = "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230324,003.1,W,A"
GGA = "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
GSA = "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"


class _Policies(TypedDict, total=False):
    checksum_policy: str
    missing_checksum: str


def run(data: bytes, **kw: Unpack[_Policies]) -> tuple[list[Epoch], dict[str, int]]:
    decoder = NMEADecoder(**kw)
    epochs = decoder.feed(data, 1.0) + decoder.flush()
    return epochs, decoder.stats()


def fix_of(epoch: Epoch) -> GNSSFix:
    """The epoch's fix, which the test expects to be there."""
    assert epoch.fix is not None, epoch
    return epoch.fix


def test_full_epoch() -> None:
    epochs, stats = run(frame(RMC) + frame(GGA) + frame(GSA))
    (epoch,) = epochs
    fix = fix_of(epoch)
    assert fix.utc == dt.datetime(2024, 3, 23, 12, 35, 19, tzinfo=dt.UTC)
    assert fix.lat == pytest.approx(48.1173)
    assert fix.lon == pytest.approx(11.516666666)
    assert fix.alt_m == 545.4
    assert fix.speed_mps == pytest.approx(22.4 * 1852 / 3600)
    assert fix.course_deg == 84.4
    assert fix.mode is FixMode.FIX_3D
    assert fix.quality is FixQuality.GPS
    assert fix.sats == 5  # the GSA lists five
    assert (fix.hdop, fix.pdop) == (0.9, 2.5)
    assert stats["sentences_ok"] == 3


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        (RMC.replace("4807.038,N", "9107.038,N"), "latitude over 90"),
        (RMC.replace("4807.038,N", "4860.000,N"), "60 minutes"),
        (RMC.replace("01131.000,E", "18131.000,E"), "longitude over 180"),
        (RMC.replace("4807.038,N", "4807.038,X"), "hemisphere"),
        (RMC.replace("230324", "320324"), "day 32"),
        (RMC.replace("123519.00", "126019.00"), "minute 60"),
    ],
)
def test_out_of_range_position_or_time_is_no_fix(body: str, bad: str) -> None:
    epochs, stats = run(frame(body))
    assert [e.fix for e in epochs] in ([None], []), bad
    assert stats["rejected_values"] == 1, bad


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (RMC.replace(",022.4,", ",-1.0,"), "speed_mps"),
        (RMC.replace(",022.4,", ",nan,"), "speed_mps"),
        (RMC.replace(",022.4,", ",9999.0,"), "speed_mps"),
        (RMC.replace(",084.4,", ",361.0,"), "course_deg"),
        (GGA.replace(",545.4,", ",99999.0,"), "alt_m"),
        (GGA.replace(",0.9,", ",-0.9,"), "hdop"),
        (GGA.replace(",08,", ",x8,"), "sats"),
    ],
)
def test_out_of_range_optional_value_is_rejected_not_clamped(body: str, field: str) -> None:
    other = GGA if body.startswith("GPRMC") else RMC
    epochs, stats = run(frame(body) + frame(other))
    fix = epochs[0].fix
    assert fix is not None and getattr(fix, field) is None
    assert stats["rejected_values"] == 1


def test_mangled_gsa_is_ignored_not_fatal() -> None:
    epochs, stats = run(frame(RMC) + frame(GGA) + frame("GPGSA,A,9,01,02"))
    assert fix_of(epochs[0]).mode is FixMode.FIX_3D
    assert stats["sentences_ok"] == 3


def test_stale_coordinates_in_a_void_rmc_are_no_fix() -> None:
    epochs, _ = run(frame(RMC.replace(",A,", ",V,", 1)) + frame(GGA))
    assert [(e.fix, e.reason) for e in epochs] == [(None, NoFixReason.RMC_VOID)]


@pytest.mark.parametrize(
    ("sentences", "quality"),
    [
        ((RMC, GGA), FixQuality.GPS),
        ((RMC, GGA.replace(",1,08,", ",6,08,")), FixQuality.ESTIMATED),
        # RMC's mode E outranks GGA's quality, and needs no GGA.
        ((RMC[:-1] + "E", GGA), FixQuality.ESTIMATED),
        ((RMC[:-1] + "E",), FixQuality.ESTIMATED),
    ],
)
def test_dead_reckoning_is_a_fix_marked_estimated(
    sentences: tuple[str, ...], quality: FixQuality
) -> None:
    epochs, _ = run(b"".join(frame(s) for s in sentences))
    assert fix_of(epochs[0]).quality is quality


def test_rmc_mode_n_is_no_fix() -> None:
    epochs, _ = run(frame(RMC[:-1] + "N"))
    assert epochs[0].reason is NoFixReason.RMC_MODE_N


def test_week_rollover_is_corrected() -> None:
    rolled = RMC.replace("230324", "070804")  # 2024-03-23 minus 1024 weeks = 2004-08-07
    epochs, _ = run(frame(rolled))
    assert fix_of(epochs[0]).utc.date() == dt.date(2024, 3, 23)


def test_gga_only_receiver_uses_last_date_and_crosses_midnight() -> None:
    late = RMC.replace("123519.00", "235959.00")
    gga1 = GGA.replace("123519.00", "235959.50")
    gga2 = GGA.replace("123519.00", "000000.50")
    epochs, _ = run(frame(late) + frame(gga1) + frame(gga2))
    utcs = [fix_of(e).utc for e in epochs]
    assert utcs == [
        dt.datetime(2024, 3, 23, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 23, 23, 59, 59, 500000, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 24, 0, 0, 0, 500000, tzinfo=dt.UTC),
    ]


def test_gga_only_without_any_date_is_no_fix() -> None:
    epochs, _ = run(frame(GGA))
    assert [(e.fix, e.reason) for e in epochs] == [(None, NoFixReason.NO_DATE)]


def test_bad_checksum_counted_and_policy() -> None:
    data = frame(RMC, corrupt=True) + frame(GGA)
    epochs, stats = run(data)
    assert stats["bad_checksum"] == 1
    assert epochs[0].reason is NoFixReason.NO_DATE  # RMC dropped
    epochs, stats = run(data, checksum_policy="accept")
    assert stats["bad_checksum"] == 1 and epochs[0].fix is not None


def test_missing_checksum_policy() -> None:
    data = f"${RMC}\r\n".encode()
    epochs, stats = run(data)
    assert stats["missing_checksum"] == 1 and epochs[0].fix is not None
    epochs, stats = run(data, missing_checksum="reject")
    assert epochs == []


def test_garbage_nul_overlong_and_partial_lines_resynchronise() -> None:
    data = (
        b"\x00\x00\xff\xfe noise"
        + b"$GPGGA,123519.00,4807"  # cut short by a reconnect
        + frame(RMC)
        + b"$GPTXT,"
        + b"x" * (MAX_LINE_BYTES + 10)
        + b"\r\n"
        + b"$GPGSA,A,3,\x00\x00*00\r\n"
        + frame(GGA)
    )
    epochs, stats = run(data)
    assert len(epochs) == 1 and epochs[0].fix is not None
    assert stats["overlong_lines"] == 1
    assert stats["garbage_bytes"] >= 8 + 21 + 15
    assert stats["sentences_ok"] == 2


def test_unknown_and_proprietary_sentences_are_counted() -> None:
    _, stats = run(frame("PMTK010,001") + frame("XXRMC,1") + frame("GPXYZ,1") + frame(RMC))
    assert stats["unknown_sentences"] == 3


def test_untimed_sentences_go_to_the_burst_they_arrived_in() -> None:
    # Quectel order: GSA and VTG come before the epoch's RMC; a 2D GSA in the second burst
    # must not leak into the first epoch.
    decoder = NMEADecoder()
    gsa2 = GSA.replace("A,3,", "A,2,")
    rmc2 = RMC.replace("123519.00", "123520.00")
    gga2 = GGA.replace("123519.00", "123520.00")
    first = decoder.feed(frame(GSA) + frame(RMC) + frame(GGA), 10.0)
    second = decoder.feed(frame(gsa2) + frame(rmc2) + frame(gga2), 11.0)
    epochs = first + second + decoder.flush()
    assert [fix_of(e).mode for e in epochs] == [FixMode.FIX_3D, FixMode.FIX_2D]


def test_cold_start_without_time_yields_no_fix_epochs_with_bounded_memory() -> None:
    rmc = frame("GPRMC,,V,,,,,,,,,,N")
    gga = frame("GPGGA,,,,,,0,00,99.99,,,,,,")
    decoder = NMEADecoder()
    epochs = decoder.feed((rmc + gga) * 1000, 0.0) + decoder.flush()
    assert len(epochs) == 1000
    assert {e.reason for e in epochs} == {NoFixReason.RMC_VOID}
    assert all(e.fix is None for e in epochs)


def test_learned_epoch_ender_emits_without_waiting_for_the_next_epoch() -> None:
    decoder = NMEADecoder()
    out = []
    for second in range(19, 24):
        t = f"1235{second}.00"
        out.append(
            len(decoder.feed(frame(GGA.replace("123519.00", t)) + frame(GSA), 0.0))
            + len(decoder.feed(frame(RMC.replace("123519.00", t)), 0.0))
        )
    # Epochs are first emitted when the next begins; once RMC is known to end each epoch,
    # every epoch comes out at its own RMC.
    assert out[-2:] == [1, 1]
    assert decoder.stats()["fixes"] == 5


def test_sentences_after_a_learned_ender_unlearn_it() -> None:
    # 10 Hz receiver: RMC, GGA every epoch; GSA only once a second, after GGA.
    decoder = NMEADecoder()
    fixes = []
    for n in range(12):
        t = f"1235{19 + n // 10:02d}.{n % 10}0"
        burst = frame(RMC.replace("123519.00", t)) + frame(GGA.replace("123519.00", t))
        if n == 5:
            burst += frame(GSA.replace("A,3,", "A,2,"))
        fixes += [e.fix for e in decoder.feed(burst, n * 0.1)]
    fixes += [e.fix for e in decoder.flush()]
    assert len(fixes) == 12 and all(f is not None for f in fixes)
    # The GSA that trailed epoch 5 (emitted early at GGA) is not pinned on epoch 6.
    assert [f.mode for f in fixes].count(FixMode.FIX_2D) == 0  # type: ignore[union-attr]
    assert decoder.stats()["late_sentences"] == 1


def test_gga_and_zda_receiver_gets_its_date_from_zda() -> None:
    epochs, _ = run(frame(GGA) + frame("GPZDA,123519.00,23,03,2024,00,00"))
    assert fix_of(epochs[0]).utc == dt.datetime(2024, 3, 23, 12, 35, 19, tzinfo=dt.UTC)


def _hinted(hint: dt.datetime | None, data: bytes) -> tuple[list[Epoch], int]:
    """Decode with a date hint; the epochs and how often the hint was asked."""
    asked = 0

    def clock() -> dt.datetime | None:
        nonlocal asked
        asked += 1
        return hint

    decoder = NMEADecoder(date_hint=clock)
    return decoder.feed(data, 1.0) + decoder.flush(), asked


@pytest.mark.parametrize(
    ("clock", "tod", "date"),
    [
        (dt.datetime(2024, 3, 23, 12, 35, 0, tzinfo=dt.UTC), "123519.00", dt.date(2024, 3, 23)),
        # The clock just past midnight, the receiver's epoch just before: yesterday's date.
        (dt.datetime(2024, 3, 24, 0, 0, 1, tzinfo=dt.UTC), "235959.50", dt.date(2024, 3, 23)),
        # The clock just before midnight, the epoch just after: tomorrow's.
        (dt.datetime(2024, 3, 23, 23, 59, 59, tzinfo=dt.UTC), "000000.50", dt.date(2024, 3, 24)),
        # A clock in another zone is converted, not read as UTC.
        (
            dt.datetime(2024, 3, 24, 1, 35, 0, tzinfo=dt.timezone(dt.timedelta(hours=13))),
            "123519.00",
            dt.date(2024, 3, 23),
        ),
    ],
)
def test_gga_only_receiver_takes_the_date_of_a_synchronized_clock(
    clock: dt.datetime, tod: str, date: dt.date
) -> None:
    epochs, _ = _hinted(clock, frame(GGA.replace("123519.00", tod)))
    utc = fix_of(epochs[0]).utc
    assert utc.date() == date and utc.strftime("%H%M%S.%f")[:9] == tod


def test_a_clock_that_knows_nothing_gives_no_date() -> None:
    epochs, asked = _hinted(None, frame(GGA))
    assert [(e.fix, e.reason) for e in epochs] == [(None, NoFixReason.NO_DATE)] and asked == 1
    # A clock before the decoder's date floor (a Pi back at 1970) is no help either.
    epochs, _ = _hinted(dt.datetime(1970, 1, 1, 12, 0, tzinfo=dt.UTC), frame(GGA))
    assert epochs[0].reason is NoFixReason.NO_DATE


def test_the_receivers_own_date_wins_over_the_clock() -> None:
    wrong = dt.datetime(2025, 1, 1, 12, 35, tzinfo=dt.UTC)
    gga2 = GGA.replace("123519.00", "123520.00")
    epochs, asked = _hinted(wrong, frame(RMC) + frame(GGA) + frame(gga2))
    assert [fix_of(e).utc.date() for e in epochs] == [dt.date(2024, 3, 23)] * 2
    assert asked == 0  # RMC gave the date first: the clock was never asked
    # Hinted first, then the receiver sends a date: the receiver's date from then on.
    rmc2 = RMC.replace("123519.00", "123521.00")
    epochs, asked = _hinted(wrong, frame(gga2) + frame(rmc2))
    assert [fix_of(e).utc.date() for e in epochs] == [dt.date(2025, 1, 1), dt.date(2024, 3, 23)]
    assert asked == 1
