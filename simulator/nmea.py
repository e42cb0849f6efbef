"""NMEA 0183 sentence: the simulator's own encoder and checksum (deliberately not pynmea2's).

The simulator writes sentences the way a u-blox/MediaTek receiver does, and tests read them back
with pynmea2: two independent implementations checking each other. Quirks kept on purpose:
before the first fix a receiver knows no time, so RMC/GGA carry empty time fields; during a fix
loss the time keeps running but position fields are empty and status is ``V``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class Talker(StrEnum):
    GP = "GP"  # GPS only
    GN = "GN"  # combined GNSS (GPS + GLONASS); GSV still per system (GP, GL)


@dataclass(frozen=True, slots=True)
class Satellite:
    prn: int
    elevation_deg: int
    azimuth_deg: int
    snr_db: int | None  # None: tracked from the almanac, no signal
    system: str = "GP"  # GSV talker of its constellation: GP (GPS) or GL (GLONASS)


@dataclass(frozen=True, slots=True)
class Epoch:
    """What a receiver reports at one instant (already including its own errors)."""

    utc: dt.datetime | None  # None: the receiver does not know the time yet (cold start)
    fix: bool
    lat: float = 0.0
    lon: float = 0.0
    alt_m: float = 0.0
    geoid_sep_m: float = 47.0
    speed_knots: float = 0.0
    course_deg: float = 0.0
    used_prns: tuple[int, ...] = ()
    hdop: float = 99.99
    pdop: float = 99.99
    vdop: float = 99.99
    satellites: tuple[Satellite, ...] = ()


def checksum(body: str) -> int:
    """XOR of every character between ``$`` and ``*``."""
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return value


def frame(body: str, *, corrupt: bool = False) -> str:
    """``$body*HH\\r\\n``; ``corrupt`` writes a wrong checksum (a fault on demand)."""
    value = checksum(body)
    if corrupt:
        value ^= 0x5A
    return f"${body}*{value:02X}\r\n"


def _lat(lat: float) -> str:
    hemisphere = "N" if lat >= 0 else "S"
    lat = abs(lat)
    degrees = int(lat)
    minutes = (lat - degrees) * 60.0
    if round(minutes, 5) >= 60.0:  # 59.999999' must not print as 60.00000'
        degrees, minutes = degrees + 1, 0.0
    return f"{degrees:02d}{minutes:08.5f},{hemisphere}"


def _lon(lon: float) -> str:
    hemisphere = "E" if lon >= 0 else "W"
    lon = abs(lon)
    degrees = int(lon)
    minutes = (lon - degrees) * 60.0
    if round(minutes, 5) >= 60.0:
        degrees, minutes = degrees + 1, 0.0
    return f"{degrees:03d}{minutes:08.5f},{hemisphere}"


def _time(utc: dt.datetime | None) -> str:
    if utc is None:
        return ""
    return f"{utc:%H%M%S}.{utc.microsecond // 10000:02d}"


def _date(utc: dt.datetime | None) -> str:
    return "" if utc is None else f"{utc:%d%m%y}"


def rmc(talker: str, epoch: Epoch) -> str:
    if not epoch.fix:
        return f"{talker}RMC,{_time(epoch.utc)},V,,,,,,,{_date(epoch.utc)},,,N"
    return (
        f"{talker}RMC,{_time(epoch.utc)},A,{_lat(epoch.lat)},{_lon(epoch.lon)},"
        f"{epoch.speed_knots:.3f},{epoch.course_deg:.2f},{_date(epoch.utc)},,,A"
    )


def gga(talker: str, epoch: Epoch) -> str:
    if not epoch.fix:
        return f"{talker}GGA,{_time(epoch.utc)},,,,,0,00,99.99,,,,,,"
    return (
        f"{talker}GGA,{_time(epoch.utc)},{_lat(epoch.lat)},{_lon(epoch.lon)},1,"
        f"{len(epoch.used_prns):02d},{epoch.hdop:.2f},{epoch.alt_m:.1f},M,"
        f"{epoch.geoid_sep_m:.1f},M,,"
    )


def vtg(talker: str, epoch: Epoch) -> str:
    if not epoch.fix:
        return f"{talker}VTG,,T,,M,,N,,K,N"
    return (
        f"{talker}VTG,{epoch.course_deg:.2f},T,,M,{epoch.speed_knots:.3f},N,"
        f"{epoch.speed_knots * 1.852:.3f},K,A"
    )


def gsa(talker: str, epoch: Epoch, prns: tuple[int, ...]) -> str:
    mode = "3" if epoch.fix else "1"
    slots = [f"{p:02d}" for p in prns[:12]] + [""] * (12 - min(len(prns), 12))
    return (
        f"{talker}GSA,A,{mode},{','.join(slots)},{epoch.pdop:.2f},{epoch.hdop:.2f},{epoch.vdop:.2f}"
    )


def gsv(system: str, satellites: tuple[Satellite, ...]) -> list[str]:
    """GSV messages for one constellation, four satellites per message."""
    if not satellites:
        return [f"{system}GSV,1,1,00"]
    total = (len(satellites) + 3) // 4
    result = []
    for n in range(total):
        chunk = satellites[n * 4 : (n + 1) * 4]
        fields = []
        for sat in chunk:
            snr = "" if sat.snr_db is None else f"{sat.snr_db:02d}"
            fields.append(f"{sat.prn:02d},{sat.elevation_deg:02d},{sat.azimuth_deg:03d},{snr}")
        result.append(f"{system}GSV,{total},{n + 1},{len(satellites):02d},{','.join(fields)}")
    return result


def encode_epoch(talker: Talker, epoch: Epoch, *, with_satellites: bool = True) -> list[str]:
    """Sentence bodies (without ``$`` and checksum) for one epoch, in a receiver's usual order."""
    bodies = [rmc(talker, epoch), vtg(talker, epoch), gga(talker, epoch)]
    if not with_satellites:
        return bodies
    if talker is Talker.GN:
        # Combined talker: one GSA per constellation, GSV keeps the per-system talker.
        for system in ("GP", "GL"):
            prns = tuple(p for p in epoch.used_prns if _system_of(p) == system)
            bodies.append(gsa("GN", epoch, prns))
        for system in ("GP", "GL"):
            bodies.extend(gsv(system, tuple(s for s in epoch.satellites if s.system == system)))
    else:
        bodies.append(gsa("GP", epoch, epoch.used_prns))
        bodies.extend(gsv("GP", tuple(s for s in epoch.satellites if s.system == "GP")))
    return bodies


def _system_of(prn: int) -> str:
    return "GL" if 65 <= prn <= 96 else "GP"
