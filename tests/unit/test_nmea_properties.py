"""Properties of the NMEA decoder: hostile bytes, round trips through our own encoder, chunking."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.nmea import NMEADecoder, NoFixReason
from drivers.samples import FixMode, GNSSFix


@dataclass(frozen=True, slots=True)
class Truth:
    """What a test receiver reports in one epoch; the encoder below writes it as NMEA."""

    utc: dt.datetime
    lat: float
    lon: float
    alt_m: float
    speed_knots: float
    course_deg: float
    sats: int
    hdop: float
    mode: int  # GSA 1/2/3
    rmc_status: str = "A"
    gga_quality: int = 1
    talker: str = "GP"


def _frame(body: str) -> bytes:
    csum = 0
    for ch in body.encode("ascii"):
        csum ^= ch
    return f"${body}*{csum:02X}\r\n".encode("ascii")


def _ddmm(value: float, width: int) -> str:
    deg = int(abs(value))
    minutes = round((abs(value) - deg) * 60.0, 6)
    if minutes >= 60.0:  # rounding carried into the next degree
        deg, minutes = deg + 1, 0.0
    return f"{deg:0{width}d}{minutes:09.6f}"


def encode(t: Truth, order: tuple[str, ...] = ("RMC", "GGA", "GSA")) -> bytes:
    """Our own test encoder (deliberately not the simulator's nor pynmea2's)."""
    hhmmss = t.utc.strftime("%H%M%S") + f".{t.utc.microsecond // 10000:02d}"
    lat = f"{_ddmm(t.lat, 2)},{'N' if t.lat >= 0 else 'S'}"
    lon = f"{_ddmm(t.lon, 3)},{'E' if t.lon >= 0 else 'W'}"
    used = ",".join(
        [f"{p:02d}" for p in range(1, min(t.sats, 12) + 1)] + [""] * (12 - min(t.sats, 12))
    )
    bodies = {
        "RMC": f"{t.talker}RMC,{hhmmss},{t.rmc_status},{lat},{lon},{t.speed_knots:.3f},"
        f"{t.course_deg:.2f},{t.utc.strftime('%d%m%y')},,,A",
        "GGA": f"{t.talker}GGA,{hhmmss},{lat},{lon},{t.gga_quality},{t.sats:02d},{t.hdop:.2f},"
        f"{t.alt_m:.1f},M,47.0,M,,",
        "GSA": f"{t.talker}GSA,A,{t.mode},{used},{t.hdop * 1.5:.2f},{t.hdop:.2f},1.00",
        "VTG": f"{t.talker}VTG,{t.course_deg:.2f},T,,M,{t.speed_knots:.3f},N,"
        f"{t.speed_knots * 1.852:.3f},K,A",
    }
    return b"".join(_frame(bodies[kind]) for kind in order)


truths = st.builds(
    Truth,
    utc=st.datetimes(min_value=dt.datetime(2021, 1, 1), max_value=dt.datetime(2035, 12, 31)).map(
        lambda d: d.replace(microsecond=(d.microsecond // 10000) * 10000, tzinfo=dt.UTC)
    ),
    lat=st.floats(-89.9, 89.9),
    lon=st.floats(-179.9, 179.9),
    alt_m=st.floats(-400.0, 9000.0),
    speed_knots=st.floats(0.0, 300.0),
    course_deg=st.floats(0.0, 359.99),
    sats=st.integers(4, 24),
    hdop=st.floats(0.5, 20.0),
    mode=st.sampled_from([2, 3]),
    talker=st.sampled_from(["GP", "GN", "GL", "GA", "GB", "BD", "GQ"]),
)


def decode_all(data: bytes, decoder: NMEADecoder | None = None) -> list[GNSSFix | str]:
    decoder = decoder or NMEADecoder()
    epochs = decoder.feed(data, 0.0) + decoder.flush()
    return [e.fix if e.fix is not None else str(e.reason) for e in epochs]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    decoder = NMEADecoder()
    decoder.feed(data, 0.0)
    decoder.flush()
    stats = decoder.stats()
    assert all(v >= 0 for v in stats.values())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"$",
                b",",
                b"*",
                b"\r\n",
                b"\x00",
                b"GPRMC",
                b"GPGGA",
                b"A",
                b"123519",
                b"4807.038",
                b"N",
                b"99",
                b"\xff",
                b"230394",
            ]
        ),
        max_size=200,
    )
)
def test_nmea_shaped_junk_never_raises(parts: list[bytes]) -> None:
    decoder = NMEADecoder(checksum_policy="accept")
    decoder.feed(b"".join(parts), 0.0)
    decoder.flush()


@settings(max_examples=200, deadline=None)
@given(truths)
def test_valid_sentences_decode_to_what_was_encoded(t: Truth) -> None:
    fixes = decode_all(encode(t))
    assert len(fixes) == 1
    fix = fixes[0]
    assert isinstance(fix, GNSSFix)
    assert fix.utc == t.utc
    assert abs(fix.lat - t.lat) < 1e-7
    assert abs(fix.lon - t.lon) < 1e-7
    assert fix.speed_mps is not None and abs(fix.speed_mps - t.speed_knots * 0.514444) < 0.001
    assert fix.course_deg is not None and abs(fix.course_deg - t.course_deg) < 0.006
    assert fix.mode == FixMode(t.mode)
    assert fix.hdop is not None and abs(fix.hdop - t.hdop) < 0.006
    assert fix.sats == min(t.sats, 12)
    if t.mode == 3:
        assert fix.alt_m is not None and abs(fix.alt_m - t.alt_m) < 0.06
    else:
        assert fix.alt_m is None


@settings(max_examples=100, deadline=None)
@given(st.lists(truths, min_size=2, max_size=6), st.data())
def test_any_split_gives_the_same_fixes(ts: list[Truth], data: st.DataObject) -> None:
    # Distinct, increasing instants as a receiver sends them.
    start = ts[0].utc
    ts = [replace(t, utc=start + dt.timedelta(seconds=i)) for i, t in enumerate(ts)]
    stream = b"".join(encode(t, ("GSA", "RMC", "VTG", "GGA")) for t in ts)
    stream = b"\x00junk" + stream[:7] + stream  # a partial sentence and garbage up front
    whole = decode_all(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = NMEADecoder()
    pieces: list[GNSSFix | str] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces += [e.fix or str(e.reason) for e in decoder.feed(stream[a:b], 0.0)]
    pieces += [e.fix or str(e.reason) for e in decoder.flush()]
    assert pieces == whole
    assert len([f for f in whole if isinstance(f, GNSSFix)]) == len(ts)


@settings(deadline=None)
@given(truths)
def test_receiver_saying_no_fix_is_never_a_fix(t: Truth) -> None:
    void = replace(t, rmc_status="V")
    invalid = replace(t, gga_quality=0)
    nofix = replace(t, mode=1)
    assert decode_all(encode(void)) == [str(NoFixReason.RMC_VOID)]
    assert decode_all(encode(invalid)) == [str(NoFixReason.GGA_INVALID)]
    assert decode_all(encode(nofix)) == [str(NoFixReason.GSA_NO_FIX)]


field_text = st.text(alphabet="0123456789.,-+eEnaifNSEWAVM ", max_size=12)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["GPRMC", "GNGGA", "GPGSA", "GPVTG", "GLGSV", "GPZDA", "GNGLL"]),
    st.lists(field_text, max_size=20),
    st.sampled_from(["", "123519.00", "235960.00", "1235"]),
)
def test_checksummed_sentences_with_hostile_fields_never_raise(
    kind: str, fields: list[str], time_field: str
) -> None:
    body = ",".join([kind, time_field, *fields]).replace(",,,", ",")
    rmc = _frame("GPRMC,123519.00,A,4807.038,N,01131.000,E,1.0,84.4,230324,,,A")
    decoder = NMEADecoder()
    epochs = decoder.feed(_frame(body) + rmc + _frame(body), 0.0) + decoder.flush()
    for epoch in epochs:
        if epoch.fix is not None:
            assert -90.0 <= epoch.fix.lat <= 90.0 and -180.0 <= epoch.fix.lon <= 180.0
            assert epoch.fix.speed_mps is None or epoch.fix.speed_mps >= 0.0
