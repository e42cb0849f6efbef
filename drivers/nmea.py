"""NMEA decoder: sans-IO bytes in, one ``Epoch`` per receiver epoch out.

Layers, bottom up: framing (resynchronise on ``$``, drop garbage, NUL bytes, over-long and partial
lines), checksum policy, field parsing with range checks (out-of-range values are rejected and
counted, never clamped), and epoch assembly (RMC, GGA, GSA, VTG and GSV of one epoch become one
fix). The decoder never raises on input bytes and never reads a clock: ``ts_mono`` comes in with
the bytes, so a live port and a replayed capture decode identically.

Epoch assembly: sentences that carry a time of day (RMC, GGA, GLL, GNS, ZDA, GST, GBS) group by
that time. Sentences without one (GSA, VTG, GSV) are held until the next timed sentence; if it
belongs to the pending epoch they join it, otherwise they go to whichever epoch they arrived
closer to in ``ts_mono``, and, without timing information (a capture file decoded in one go), to
the pending epoch if it lacks that kind of sentence, else to the next. An epoch is emitted when
the receiver's learned last timed sentence of an epoch arrives, when the time changes, or on
``flush()``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import reduce
from operator import xor
from types import MappingProxyType
from typing import TypeVar

from drivers.samples import FixMode, FixQuality, GNSSFix

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_LINE_BYTES = 240
"""NMEA 0183 allows 82 characters, but proprietary sentences run longer (MediaTek's $PMTKCHN is
about 200), so we allow 240 before calling a line over-long."""

DATE_FLOOR = dt.date(2020, 1, 1)
"""Build-time floor: receiver dates before this are GPS week-rollover victims (1024 weeks back)."""

WEEK_ROLLOVER = dt.timedelta(weeks=1024)
MAX_FLOATING = 256  # sentences without a time held for the next timed one
KNOTS_TO_MPS = 1852.0 / 3600.0
MAX_SPEED_MPS = 515.0  # NMEA receivers under COCOM limits stop reporting above 1000 knots
MIN_ALT_M = -1500.0
MAX_ALT_M = 18000.0  # COCOM altitude limit
MAX_DOP = 99.0  # u-blox and others send 99.99 to mean "unknown"

TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI"})
_TIMED_TIME_FIELD = MappingProxyType(
    {"RMC": 1, "GGA": 1, "GNS": 1, "ZDA": 1, "GST": 1, "GBS": 1, "GLL": 5}
)  # sentence type -> index of its time-of-day field
_UNTIMED = frozenset({"GSA", "VTG", "GSV"})
_FRAME_STOP = re.compile(rb"[\r\n$]")
_SENTENCE = re.compile(rb"\$[^\r\n$]*")
_HEX = frozenset("0123456789ABCDEFabcdef")


class NoFixReason(StrEnum):
    """Why an epoch carries no fix."""

    RMC_VOID = "rmc status V"
    RMC_MODE_N = "rmc mode N"
    GGA_INVALID = "gga quality 0"
    GSA_NO_FIX = "gsa mode 1"
    NO_POSITION = "no position"
    NO_DATE = "no date yet"
    REJECTED_VALUE = "value out of range"
    NO_FIX_SENTENCE = "no rmc or gga"


class ChecksumPolicy(StrEnum):
    REJECT = "reject"
    ACCEPT = "accept"


@dataclass(frozen=True, slots=True)
class Epoch:
    """One receiver epoch: a valid ``fix``, or ``fix is None`` and the ``reason``."""

    ts_mono: float
    fix: GNSSFix | None
    reason: NoFixReason | None = None
    utc: dt.datetime | None = None  # the receiver's time, also for no-fix epochs when known


@dataclass(slots=True)
class _Sentence:
    kind: str  # talker + type, e.g. "GNGSA"
    stype: str  # "GSA"
    fields: list[str]
    ts_mono: float


@dataclass(slots=True)
class _Pending:
    tod_ms: int
    ts_first: float
    ts_last: float
    sentences: list[_Sentence] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    last_timed_kind: str = ""

    def add(self, s: _Sentence) -> None:
        self.sentences.append(s)
        self.kinds.add(s.kind)
        self.ts_last = max(self.ts_last, s.ts_mono)


class _RejectedValueError(ValueError):
    """A field held a value outside its legal range."""


def _parse_tod_ms(text: str) -> int:
    """hhmmss[.sss] -> milliseconds of the day."""
    if len(text) < 6 or not text[:6].isdigit():
        raise _RejectedValueError(text)
    hh, mm = int(text[0:2]), int(text[2:4])
    sec = float(text[4:])
    if hh > 23 or mm > 59 or not 0.0 <= sec < 60.0:
        raise _RejectedValueError(text)
    return (hh * 3600 + mm * 60) * 1000 + round(sec * 1000)


def _parse_coord(value: str, hemi: str, max_deg: int) -> float | None:
    """(d)ddmm.mmmm + hemisphere -> signed degrees; None when empty."""
    if not value and not hemi:
        return None
    dot = value.find(".")
    head = value if dot < 0 else value[:dot]
    if len(head) < 3 or not head.isdigit():
        raise _RejectedValueError(value)
    deg = int(head[:-2])
    try:
        minutes = float(value[len(head) - 2 :])
    except ValueError:
        raise _RejectedValueError(value) from None
    if minutes >= 60.0 or minutes < 0.0:
        raise _RejectedValueError(value)
    result = deg + minutes / 60.0
    if result > max_deg:
        raise _RejectedValueError(value)
    if max_deg == 90:
        if hemi == "S":
            result = -result
        elif hemi != "N":
            raise _RejectedValueError(hemi)
    else:
        if hemi == "W":
            result = -result
        elif hemi != "E":
            raise _RejectedValueError(hemi)
    return result


def _opt_float(value: str, lo: float, hi: float) -> float | None:
    if not value:
        return None
    try:
        f = float(value)
    except ValueError:
        raise _RejectedValueError(value) from None
    if not lo <= f <= hi:  # also rejects NaN
        raise _RejectedValueError(value)
    return f


def _opt_int(value: str, lo: int, hi: int) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise _RejectedValueError(value)
    i = int(value)
    if not lo <= i <= hi:
        raise _RejectedValueError(value)
    return i


def _midnight_utc(date: dt.date) -> dt.datetime:
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)


def _parse_date(text: str) -> dt.date:
    """ddmmyy -> date; two-digit years are 20yy, as in gpsd."""
    if len(text) != 6 or not text.isdigit():
        raise _RejectedValueError(text)
    try:
        return dt.date(2000 + int(text[4:6]), int(text[2:4]), int(text[0:2]))
    except ValueError:
        raise _RejectedValueError(text) from None


def _course(value: str) -> float | None:
    course = _opt_float(value, 0.0, 360.0)
    # Some receivers print 360.0 for due north; it is the same direction, not a clamp.
    return 0.0 if course == 360.0 else course


class NMEADecoder:
    """Sans-IO NMEA 0183 decoder: ``feed(bytes, ts_mono) -> list[Epoch]``; never raises on input."""

    def __init__(
        self,
        checksum_policy: str = "reject",
        missing_checksum: str = "accept",
        *,
        date_floor: dt.date = DATE_FLOOR,
        date_hint: Callable[[], dt.datetime | None] | None = None,
    ) -> None:
        """``date_hint`` (optional) answers "UTC now, if a trustworthy clock knows it": a
        GGA-only receiver that has not sent a date takes its date from it (see ``_utc``)."""
        self._accept_bad = ChecksumPolicy(checksum_policy) is ChecksumPolicy.ACCEPT
        self._date_hint = date_hint
        self._accept_missing = ChecksumPolicy(missing_checksum) is ChecksumPolicy.ACCEPT
        self._date_floor = date_floor
        self._date_ceiling = date_floor + WEEK_ROLLOVER
        # framing state: 0 idle (between lines), 1 inside a line, 2 discarding an over-long line
        self._state = 0
        self._line = bytearray()
        # epoch state
        self._pending: _Pending | None = None
        self._floating: list[_Sentence] = []
        self._last_emitted_tod: int | None = None
        self._last_emitted_ts: float | None = None
        self._ender: str = ""  # learned kind of the last timed sentence of an epoch
        self._ender_candidate: str = ""
        self._date: dt.date | None = None
        self._date_tod_ms = 0
        self._stats = {
            "sentences_ok": 0,
            "bad_checksum": 0,
            "missing_checksum": 0,
            "garbage_bytes": 0,
            "overlong_lines": 0,
            "unknown_sentences": 0,
            "rejected_values": 0,
            "late_sentences": 0,
            "epochs": 0,
            "fixes": 0,
        }

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def reset(self) -> None:
        """Forget a partial line and the pending epoch (the device was unplugged)."""
        self._state = 0
        self._line.clear()
        self._pending = None
        self._floating.clear()

    def feed(self, data: bytes, ts_mono: float) -> list[Epoch]:
        out: list[Epoch] = []
        for line in self._frame(data):
            sentence = self._check(line, ts_mono)
            if sentence is not None:
                self._assemble(sentence, out)
        return out

    def flush(self) -> list[Epoch]:
        """Emit the pending epoch now (the receiver went quiet, or the input ended)."""
        out: list[Epoch] = []
        if self._pending is not None:
            out.append(self._close(self._pending, self._floating))
            self._pending = None
        elif any(f.stype in _TIMED_TIME_FIELD for f in self._floating):
            out.append(self._close_timeless())
        self._floating = []
        return out

    # -- framing ------------------------------------------------------------------------------

    def _frame(self, data: bytes) -> list[bytes]:
        """Complete lines from ``data``; the same lines whatever the chunking.

        Byte by byte this is a three-state machine: between lines everything but ``$`` is
        garbage; inside a line CR or LF ends it and ``$`` cuts it short (a partial line: garbage)
        and starts the next; a line longer than MAX_LINE_BYTES is dropped up to its end or the
        next ``$``. The regex does the same over a whole chunk at C speed.
        """
        lines: list[bytes] = []
        stats = self._stats
        n = len(data)
        pos = 0
        if self._state != 0:
            m = _FRAME_STOP.search(data)
            k = n if m is None else m.start()
            if self._state == 1:
                self._line += data[:k]
                if len(self._line) > MAX_LINE_BYTES:
                    stats["overlong_lines"] += 1
                    self._line = bytearray()
                    self._state = 2
            if m is None:
                return lines
            if self._state == 1:
                if data[k] == 0x24:  # "$": the line was cut short (reconnect, lost bytes)
                    stats["garbage_bytes"] += len(self._line)
                else:
                    lines.append(bytes(self._line))
            self._line = bytearray()
            self._state = 0
            pos = k
        for m in _SENTENCE.finditer(data, pos):
            start, end = m.span()
            if start > pos:
                gap = data[pos:start]
                stats["garbage_bytes"] += len(gap) - gap.count(b"\r") - gap.count(b"\n")
            pos = end
            if end - start > MAX_LINE_BYTES:
                stats["overlong_lines"] += 1
                if end == n:
                    self._state = 2
            elif end == n:
                self._line = bytearray(m.group())
                self._state = 1
            elif data[end] == 0x24:
                stats["garbage_bytes"] += end - start
            else:
                lines.append(m.group())
        if pos < n:
            gap = data[pos:]
            stats["garbage_bytes"] += len(gap) - gap.count(b"\r") - gap.count(b"\n")
        return lines

    # -- checksum and fields ------------------------------------------------------------------

    def _check(self, line: bytes, ts_mono: float) -> _Sentence | None:
        stats = self._stats
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            stats["garbage_bytes"] += len(line)
            return None
        if not text.isprintable():
            stats["garbage_bytes"] += len(line)
            return None
        star = text.rfind("*")
        if star >= 0 and len(text) - star == 3 and text[star + 1] in _HEX and text[-1] in _HEX:
            body = text[1:star]
            if reduce(xor, line[1:star], 0) != int(text[star + 1 :], 16):
                stats["bad_checksum"] += 1
                if not self._accept_bad:
                    return None
        elif star >= 0:
            stats["bad_checksum"] += 1  # a mangled checksum is a bad one
            if not self._accept_bad:
                return None
            body = text[1:star]
        else:
            stats["missing_checksum"] += 1
            if not self._accept_missing:
                return None
            body = text[1:]
        fields = body.split(",")
        head = fields[0]
        if len(head) != 5 or head[:2] not in TALKERS:
            stats["unknown_sentences"] += 1
            return None
        stype = head[2:]
        if stype not in _TIMED_TIME_FIELD and stype not in _UNTIMED:
            stats["unknown_sentences"] += 1
            return None
        stats["sentences_ok"] += 1
        return _Sentence(head, stype, fields, ts_mono)

    # -- epoch assembly -----------------------------------------------------------------------

    def _assemble(self, s: _Sentence, out: list[Epoch]) -> None:
        tfield = _TIMED_TIME_FIELD.get(s.stype)
        if len(self._floating) >= MAX_FLOATING:
            # A receiver that never sends a time: keep memory bounded.
            self._stats["late_sentences"] += len(self._floating)
            self._floating = []
        if tfield is None:
            self._floating.append(s)
            return
        fields = s.fields
        if len(fields) <= tfield or not fields[tfield]:
            # A timed sentence without its time (cold start, before the receiver knows it). A
            # second one of the same kind starts the next timeless epoch.
            if self._pending is not None:
                keep, self._floating = self._split_floating(self._pending, s.ts_mono)
                out.append(self._close(self._pending, keep))
                self._pending = None
            elif any(f.kind == s.kind for f in self._floating):
                out.append(self._close_timeless())
            self._floating.append(s)
            return
        try:
            tod = _parse_tod_ms(fields[tfield])
        except (_RejectedValueError, ValueError):
            self._stats["rejected_values"] += 1
            return
        pending = self._pending
        if pending is not None and pending.tod_ms == tod:
            for f in self._floating:
                pending.add(f)
            self._floating = []
            pending.add(s)
            pending.last_timed_kind = s.kind
        else:
            if pending is None and tod == self._last_emitted_tod:
                # The epoch was emitted early at a learned ender, yet more of it arrives: the
                # ender guess was wrong. Drop the straggler and learn again.
                self._stats["late_sentences"] += 1
                self._ender = ""
                self._floating = []
                return
            carry: list[_Sentence] = []
            if pending is not None:
                if not self._floating:
                    if pending.last_timed_kind == self._ender_candidate:
                        self._ender = pending.last_timed_kind
                    self._ender_candidate = pending.last_timed_kind
                else:
                    self._ender_candidate = ""
                keep, carry = self._split_floating(pending, s.ts_mono)
                out.append(self._close(pending, keep))
            elif self._ender and self._floating and self._last_emitted_ts is not None:
                # Sentences came after the epoch was emitted at its learned ender, so the
                # ender was wrong. Those that arrived with that burst are too late to join it.
                self._ender = ""
                last_ts = self._last_emitted_ts
                late = [f for f in self._floating if f.ts_mono - last_ts < s.ts_mono - f.ts_mono]
                self._stats["late_sentences"] += len(late)
                carry = self._floating[len(late) :]
            else:
                carry = self._floating
            self._floating = []
            pending = _Pending(tod, s.ts_mono, s.ts_mono)
            for f in carry:
                pending.add(f)
            pending.add(s)
            pending.last_timed_kind = s.kind
            self._pending = pending
        if self._ender and s.kind == self._ender:
            out.append(self._close(pending, []))
            self._pending = None

    def _close_timeless(self) -> Epoch:
        sentences, self._floating = self._floating, []
        ts = sentences[0].ts_mono
        self._stats["epochs"] += 1
        return self._build(_Pending(-1, ts, ts), sentences)

    def _split_floating(
        self, pending: _Pending, ts_next: float
    ) -> tuple[list[_Sentence], list[_Sentence]]:
        keep: list[_Sentence] = []
        carry: list[_Sentence] = []
        for f in self._floating:
            to_prev = f.ts_mono - pending.ts_last
            to_next = ts_next - f.ts_mono
            if to_prev < to_next:
                keep.append(f)
            elif to_next < to_prev:
                carry.append(f)
            elif f.kind not in pending.kinds and not carry:
                keep.append(f)
            else:
                carry.append(f)
        return keep, carry

    def _close(self, pending: _Pending, extra: list[_Sentence]) -> Epoch:
        self._last_emitted_tod = pending.tod_ms
        self._last_emitted_ts = pending.ts_last
        self._stats["epochs"] += 1
        epoch = self._build(pending, [*pending.sentences, *extra])
        if epoch.fix is not None:
            self._stats["fixes"] += 1
        return epoch

    def _build(self, pending: _Pending, sentences: list[_Sentence]) -> Epoch:
        rmc: list[str] | None = None
        gga: list[str] | None = None
        vtg: list[str] | None = None
        gsa: list[list[str]] = []
        in_view: dict[str, int] = {}
        date_text: str | None = None
        for s in sentences:
            if s.stype == "RMC" and rmc is None:
                rmc = s.fields
            elif s.stype == "GGA" and gga is None:
                gga = s.fields
            elif s.stype == "GSA":
                gsa.append(s.fields)
            elif s.stype == "VTG" and vtg is None:
                vtg = s.fields
            elif s.stype == "ZDA" and len(s.fields) > 4 and date_text is None:
                # ZDA's dd,mm,yyyy as RMC's ddmmyy (the century is 20 either way).
                date_text = s.fields[2].zfill(2) + s.fields[3].zfill(2) + s.fields[4][-2:]
            elif s.stype == "GSV" and len(s.fields) > 3 and s.fields[3].isdigit():
                in_view[s.kind] = max(in_view.get(s.kind, 0), int(s.fields[3]))
        ts = pending.ts_first
        reason: NoFixReason | None = None
        # The receiver's own verdict comes first: a void epoch is reported as void, even when
        # the stale coordinates or the cold-start date it carries are also out of range.
        if rmc is not None and len(rmc) > 2 and rmc[2] not in ("A", "D"):
            reason = NoFixReason.RMC_VOID
        elif gga is not None and len(gga) > 6 and gga[6] in ("0", ""):
            reason = NoFixReason.GGA_INVALID
        try:
            if rmc is not None and len(rmc) > 9 and rmc[9]:
                date_text = rmc[9]
            utc = None if pending.tod_ms < 0 else self._utc(pending.tod_ms, date_text)
        except _RejectedValueError:
            self._stats["rejected_values"] += 1
            return Epoch(ts, None, reason or NoFixReason.REJECTED_VALUE)
        lat = lon = alt_m = speed_mps = course_deg = hdop = pdop = None
        sats: int | None = None
        soft = self._soft  # optional values: a rejected one is counted and becomes None
        quality: FixQuality | None = None
        rmc_estimated = False
        gsa_mode = 0
        try:
            if rmc is not None:
                if len(rmc) < 10:
                    raise _RejectedValueError("short RMC")
                mode_indicator = rmc[12][:1] if len(rmc) > 12 else ""  # NMEA 2.3 and later
                if reason is None and mode_indicator == "N":
                    reason = NoFixReason.RMC_MODE_N
                rmc_estimated = mode_indicator == "E"
                lat = _parse_coord(rmc[3], rmc[4], 90)
                lon = _parse_coord(rmc[5], rmc[6], 180)
                knots = soft(_opt_float, rmc[7], 0.0, MAX_SPEED_MPS / KNOTS_TO_MPS)
                speed_mps = None if knots is None else knots * KNOTS_TO_MPS
                course_deg = soft(_course, rmc[8])
            if gga is not None:
                if len(gga) < 10:
                    raise _RejectedValueError("short GGA")
                q = _opt_int(gga[6], 0, 8)
                if not q:
                    reason = reason or NoFixReason.GGA_INVALID
                else:
                    quality = FixQuality(q)
                g_lat = _parse_coord(gga[2], gga[3], 90)
                g_lon = _parse_coord(gga[4], gga[5], 180)
                if g_lat is not None and g_lon is not None:
                    lat, lon = g_lat, g_lon
                sats = soft(_opt_int, gga[7], 0, 99)
                hdop = soft(_opt_float, gga[8], 0.0, MAX_DOP)
                alt_m = soft(_opt_float, gga[9], MIN_ALT_M, MAX_ALT_M)
            if rmc_estimated:
                # RMC's mode E (dead reckoning) outranks whatever GGA claims: an extrapolated
                # position is flagged as such downstream, never taken for a measured one.
                quality = FixQuality.ESTIMATED
            for g in gsa:
                mode = soft(_opt_int, g[2], 1, 3) if len(g) >= 17 else None
                if mode is None:
                    continue  # a mangled GSA tells nothing; RMC and GGA still decide
                gsa_mode = max(gsa_mode, mode)
                if pdop is None:
                    pdop = soft(_opt_float, g[15], 0.0, MAX_DOP)
                if hdop is None:
                    hdop = soft(_opt_float, g[16], 0.0, MAX_DOP)
            if gsa and gsa_mode == 1:
                reason = reason or NoFixReason.GSA_NO_FIX
            # GGA's count covers one constellation on some receivers and stops at 12 on
            # u-blox; the GSA lists name every satellite of the combined solution.
            used = sum(1 for g in gsa if len(g) >= 17 for prn in g[3:15] if prn)
            if used:
                sats = used
            if vtg is not None and len(vtg) >= 8:
                if course_deg is None:
                    course_deg = soft(_course, vtg[1])
                if speed_mps is None:
                    kmh = soft(_opt_float, vtg[7], 0.0, MAX_SPEED_MPS * 3.6)
                    speed_mps = None if kmh is None else kmh / 3.6
        except _RejectedValueError:
            self._stats["rejected_values"] += 1
            return Epoch(ts, None, reason or NoFixReason.REJECTED_VALUE, utc)
        if rmc is None and gga is None:
            return Epoch(ts, None, NoFixReason.NO_FIX_SENTENCE, utc)
        if reason is not None:
            return Epoch(ts, None, reason, utc)
        if lat is None or lon is None:
            return Epoch(ts, None, NoFixReason.NO_POSITION, utc)
        if utc is None:
            return Epoch(ts, None, NoFixReason.NO_DATE)  # never a fix without a time
        if gsa_mode >= 2:
            mode = FixMode(gsa_mode)
        else:
            mode = FixMode.FIX_3D if alt_m is not None else FixMode.FIX_2D
        if mode is FixMode.FIX_2D:
            alt_m = None  # a 2D solution's altitude is an assumption, not a measurement
        fix = GNSSFix(
            ts_mono=ts,
            utc=utc,
            lat=lat,
            lon=lon,
            alt_m=alt_m,
            speed_mps=speed_mps,
            course_deg=course_deg,
            mode=mode,
            quality=quality,
            sats=sats,
            hdop=hdop,
            pdop=pdop,
            sats_in_view=sum(in_view.values()) if in_view else None,
        )
        return Epoch(ts, fix, None, utc)

    def _soft(self, parse: Callable[..., _T | None], *args: object) -> _T | None:
        try:
            return parse(*args)
        except _RejectedValueError:
            self._stats["rejected_values"] += 1
            return None

    def _utc(self, tod_ms: int, date_text: str | None) -> dt.datetime | None:
        """The epoch's UTC from RMC's (or ZDA's) date, else the last known date, else (GGA-only
        receivers) the date of a synchronized clock, if a ``date_hint`` was given."""
        if date_text:
            date = _parse_date(date_text)
            while date < self._date_floor:
                date += WEEK_ROLLOVER  # GPS week rollover: the receiver is 1024 weeks behind
            if date > self._date_ceiling:
                raise _RejectedValueError(date_text)
            self._date, self._date_tod_ms = date, tod_ms
        elif self._date is None:
            hinted = self._hinted_date(tod_ms)
            if hinted is None:
                return None
            self._date, self._date_tod_ms = hinted, tod_ms
        elif tod_ms + 12 * 3600_000 < self._date_tod_ms:
            # Midnight passed since the last RMC: the time of day wrapped.
            self._date, self._date_tod_ms = self._date + dt.timedelta(days=1), tod_ms
        else:
            self._date_tod_ms = tod_ms
        return _midnight_utc(self._date) + dt.timedelta(milliseconds=tod_ms)

    def _hinted_date(self, tod_ms: int) -> dt.date | None:
        """The date a synchronized clock gives this time of day: of the day before, the day
        of and the day after the clock's, the one that puts it nearest the clock (a clock
        within 12 h cannot pick a wrong day, so midnight on either side is safe)."""
        now = self._date_hint() if self._date_hint is not None else None
        if now is None:
            return None
        now = now.astimezone(dt.UTC)
        tod = dt.timedelta(milliseconds=tod_ms)
        days = [now.date() + dt.timedelta(days=k) for k in (-1, 0, 1)]
        date = min(days, key=lambda d: abs(_midnight_utc(d) + tod - now))
        if not self._date_floor <= date <= self._date_ceiling:
            return None  # a clock outside what the decoder accepts from receivers is no help
        logger.info("GNSS date %s taken from the synchronized system clock (no RMC or ZDA)", date)
        return date
