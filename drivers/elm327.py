"""ELM327 replies: raw adapter text to typed OBD-II messages and decoded values (sans-IO).

Everything here works on plain strings, so it is tested with strings and fuzzed with hypothesis.
Handles headers on and off, spaces on and off, ISO-TP multi-frame CAN replies (both the raw
``7E8 10 ..`` / ``7E8 21 ..`` frames of ATH1 and the ``014`` / ``0: ..`` layout of ATH0), the
ELM327's error strings, multi-PID mode 01 replies, mode 03/07 trouble codes and mode 09 VIN.
Every failure is an ``AdapterReplyError`` with a ``ReplyErrorKind`` the caller counts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from drivers.errors import ProtocolError


class ReplyErrorKind(StrEnum):
    """Why a reply carried no usable data (the keys of the driver's error counters)."""

    NO_DATA = "no_data"  # ECU silent: ignition off, or PID not supported
    UNABLE_TO_CONNECT = "unable_to_connect"  # protocol search failed (ignition off)
    STOPPED = "stopped"  # the adapter was interrupted by a character we sent
    BUS_INIT = "bus_init"  # "BUS INIT: ...ERROR" on K-line buses
    CAN_ERROR = "can_error"
    BUS_ERROR = "bus_error"  # BUS BUSY, BUS ERROR, FB ERROR, DATA ERROR, <DATA ERROR, RX ERROR
    BUFFER_FULL = "buffer_full"
    UNKNOWN_COMMAND = "unknown_command"  # "?"
    ADAPTER_ERROR = "adapter_error"  # ERRxx, LV RESET, ACT ALERT
    SILENCE = "silence"  # nothing but the prompt, or no prompt within the timeout
    GARBAGE = "garbage"  # text that is none of the above and not a well-formed frame
    MISMATCH = "mismatch"  # well-formed, but not the answer to what we asked


class AdapterReplyError(ProtocolError):
    """One reply that carried no usable data; ``kind`` says why."""

    def __init__(self, kind: ReplyErrorKind, detail: str = "") -> None:
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)
        self.kind = kind
        self.detail = detail


_ERROR_LINES: tuple[tuple[str, ReplyErrorKind], ...] = (
    ("NO DATA", ReplyErrorKind.NO_DATA),
    ("UNABLE TO CONNECT", ReplyErrorKind.UNABLE_TO_CONNECT),
    ("STOPPED", ReplyErrorKind.STOPPED),
    ("BUS INIT", ReplyErrorKind.BUS_INIT),
    ("CAN ERROR", ReplyErrorKind.CAN_ERROR),
    ("BUS BUSY", ReplyErrorKind.BUS_ERROR),
    ("BUS ERROR", ReplyErrorKind.BUS_ERROR),
    ("FB ERROR", ReplyErrorKind.BUS_ERROR),
    ("DATA ERROR", ReplyErrorKind.BUS_ERROR),
    ("RX ERROR", ReplyErrorKind.BUS_ERROR),
    ("BUFFER FULL", ReplyErrorKind.BUFFER_FULL),
    ("LV RESET", ReplyErrorKind.ADAPTER_ERROR),
    ("ACT ALERT", ReplyErrorKind.ADAPTER_ERROR),
)
_ERR_CODE = re.compile(r"^ERR\d\d$")
_HEX_LINE = re.compile(r"^[0-9A-F]+$")
_SEGMENT_LINE = re.compile(r"^([0-9A-F]):([0-9A-F]*)$")
_VOLTAGE = re.compile(r"^(\d{1,2}(?:\.\d{1,2})?)V?$")


@dataclass(frozen=True, slots=True)
class ECUMessage:
    """One complete OBD-II reply from one ECU (ISO-TP reassembled), service byte first."""

    ecu: str  # CAN id ("7E8"), or "" when headers were off
    data: bytes


def reply_lines(text: str) -> list[str]:
    """Split raw adapter text into upper-case lines without spaces, prompt, echo noise or NULs."""
    cleaned = text.replace("\x00", "").replace(">", "\r")
    lines = []
    for raw in re.split(r"[\r\n]+", cleaned):
        line = "".join(ch for ch in raw if not ch.isspace()).upper()
        if line and line != "SEARCHING...":
            lines.append(line)
    return lines


def _classify(line: str) -> AdapterReplyError | None:
    if line == "?":
        return AdapterReplyError(ReplyErrorKind.UNKNOWN_COMMAND)
    if _ERR_CODE.match(line):
        return AdapterReplyError(ReplyErrorKind.ADAPTER_ERROR, line)
    for text, kind in _ERROR_LINES:
        if text.replace(" ", "") in line:
            return AdapterReplyError(kind, line[:40])
    return None


def parse_reply(text: str, request: str = "") -> list[ECUMessage]:
    """Parse one ECU reply into messages; raise ``AdapterReplyError`` when it carries none.

    ``request`` is the command we sent: an echoed copy of it (ATE1) is dropped.
    """
    echo = "".join(request.split()).upper()
    lines = [line for line in reply_lines(text) if not (echo and line == echo)]
    if not lines:
        raise AdapterReplyError(ReplyErrorKind.SILENCE)
    frames: list[str] = []
    for line in lines:
        error = _classify(line)
        if error is not None:
            if frames:
                continue  # e.g. a second ECU's NO DATA beside a good reply
            raise error
        frames.append(line)
    if any(_SEGMENT_LINE.match(f) for f in frames):
        return [_parse_segments(frames)]
    return _parse_can_frames(frames)


def _parse_segments(lines: list[str]) -> ECUMessage:
    """Headers off, multi-frame: "014", "0:490201314434", "1:...", ... (ELM327 layout)."""
    if not _HEX_LINE.match(lines[0]) or len(lines[0]) > 3:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, "segmented reply without length line")
    length = int(lines[0], 16)
    data = bytearray()
    for expected, line in enumerate(lines[1:]):
        m = _SEGMENT_LINE.match(line)
        if m is None or int(m.group(1), 16) != expected % 16 or len(m.group(2)) % 2:
            raise AdapterReplyError(ReplyErrorKind.GARBAGE, line[:40])
        data += bytes.fromhex(m.group(2))
    if len(data) < length or length == 0:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"short multi-frame reply ({len(data)})")
    return ECUMessage("", bytes(data[:length]))


def _parse_can_frames(lines: list[str]) -> list[ECUMessage]:
    for line in lines:
        if not _HEX_LINE.match(line):
            raise AdapterReplyError(ReplyErrorKind.GARBAGE, line[:40])
    # Headers on: an 11-bit id (3 hex digits) then PCI and data, i.e. an odd digit count, or a
    # 29-bit OBD response id 18DAF1xx (8 digits) then PCI and data. Headers off: data only.
    if all(len(line) % 2 == 1 and len(line) >= 7 for line in lines):
        return _reassemble(lines, 3)
    if all(line.startswith("18DA") and len(line) >= 12 for line in lines):
        return _reassemble(lines, 8)
    if all(len(line) % 2 == 0 for line in lines) and len(lines) == 1:
        return [ECUMessage("", bytes.fromhex(lines[0]))]
    if all(len(line) % 2 == 0 for line in lines):
        # Several ECUs answered, headers off: one message per line.
        return [ECUMessage("", bytes.fromhex(line)) for line in lines]
    raise AdapterReplyError(ReplyErrorKind.GARBAGE, "mixed frame layouts")


def _reassemble(lines: list[str], id_digits: int) -> list[ECUMessage]:
    """ISO-TP (ISO 15765-2) reassembly of frames printed with CAN ids, per ECU."""
    pending: dict[str, tuple[int, bytearray, int]] = {}  # ecu -> (length, data, next seq)
    done: list[ECUMessage] = []
    for line in lines:
        ecu, frame = line[:id_digits], bytes.fromhex(line[id_digits:])
        pci_type = frame[0] >> 4
        if pci_type == 0:
            length = frame[0] & 0x0F
            if length == 0 or length > len(frame) - 1:
                raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"bad single frame {line[:40]}")
            done.append(ECUMessage(ecu, frame[1 : 1 + length]))
        elif pci_type == 1:
            if len(frame) < 2:
                raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"bad first frame {line[:40]}")
            length = ((frame[0] & 0x0F) << 8) | frame[1]
            pending[ecu] = (length, bytearray(frame[2:]), 1)
        elif pci_type == 2:
            if ecu not in pending:
                raise AdapterReplyError(ReplyErrorKind.GARBAGE, "consecutive frame without first")
            length, data, seq = pending[ecu]
            if frame[0] & 0x0F != seq & 0x0F:
                raise AdapterReplyError(ReplyErrorKind.GARBAGE, "consecutive frame out of order")
            data += frame[1:]
            pending[ecu] = (length, data, seq + 1)
        else:
            raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"unknown frame type {line[:40]}")
        for key, (length, data, _seq) in list(pending.items()):
            if len(data) >= length:
                done.append(ECUMessage(key, bytes(data[:length])))
                del pending[key]
    if pending:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, "multi-frame reply cut short")
    if not done:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, "no complete frame")
    return done


# ---- mode 01 values ----


@dataclass(frozen=True, slots=True)
class PID:
    """A mode 01 parameter: its data length and its decoder to the named reading."""

    code: int
    length: int
    name: str  # the OBDReading field it fills ("" when no field takes it)
    decode: Callable[[bytes], float]


def _temp_c(b: bytes) -> float:
    return float(b[0] - 40)


def _pct(b: bytes) -> float:
    return b[0] * 100.0 / 255.0


def _word(b: bytes) -> int:
    return (b[0] << 8) | b[1]


PIDS: dict[int, PID] = {
    p.code: p
    for p in (
        PID(0x04, 1, "engine_load_pct", _pct),
        PID(0x05, 1, "coolant_c", _temp_c),
        PID(0x0B, 1, "map_kpa", lambda b: float(b[0])),
        PID(0x0C, 2, "rpm", lambda b: _word(b) / 4.0),
        PID(0x0D, 1, "speed_kmh", lambda b: float(b[0])),
        PID(0x0F, 1, "intake_c", _temp_c),
        PID(0x10, 2, "maf_gps", lambda b: _word(b) / 100.0),
        PID(0x11, 1, "", _pct),
        PID(0x1F, 2, "runtime_s", lambda b: float(_word(b))),
        PID(0x2F, 1, "fuel_level_pct", _pct),
        PID(0x31, 2, "", lambda b: float(_word(b))),
        PID(0x42, 2, "", lambda b: _word(b) / 1000.0),
        PID(0x46, 1, "", _temp_c),
        PID(0x5C, 1, "", _temp_c),
        PID(0x5E, 2, "fuel_rate_lph", lambda b: _word(b) / 20.0),
        PID(0xA6, 4, "odometer_km", lambda b: int.from_bytes(b[:4], "big") / 10.0),
    )
}
BITMAP_PIDS = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0)


def decode_mode01(data: bytes) -> dict[int, bytes]:
    """Split a mode 01 reply (``41 pid bytes [pid bytes ...]``) into PID -> raw value bytes.

    Multi-PID replies carry several PIDs back to back; the lengths come from the PID table, so
    an unknown PID in the middle makes the rest undecodable and raises GARBAGE.
    """
    if len(data) < 2 or data[0] != 0x41:
        raise AdapterReplyError(ReplyErrorKind.MISMATCH, f"not a mode 01 reply: {data[:4].hex()}")
    out: dict[int, bytes] = {}
    i = 1
    while i < len(data):
        pid = data[i]
        length = 4 if pid in BITMAP_PIDS else PIDS[pid].length if pid in PIDS else -1
        if length < 0:
            raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"unknown PID {pid:02X} in reply")
        value = data[i + 1 : i + 1 + length]
        if len(value) != length:
            raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"PID {pid:02X} reply cut short")
        out[pid] = value
        i += 1 + length
    return out


def decode_bitmap(base_pid: int, value: bytes) -> set[int]:
    """PIDs a support bitmap (PID 00, 20, 40, ...) announces, bit 31 = base + 1."""
    bits = int.from_bytes(value[:4], "big")
    return {base_pid + 32 - i for i in range(32) if bits >> i & 1}


# ---- trouble codes, VIN, voltage ----


def decode_dtcs(data: bytes, service: int) -> tuple[str, ...]:
    """Trouble codes from a mode 03 (``43``) or 07 (``47``) reply.

    On CAN the service byte is followed by a count byte, then two bytes per code. Older buses
    have no count (and pad with 00 00), so an odd remainder tells the CAN layout.
    """
    if not data or data[0] != service + 0x40:
        raise AdapterReplyError(ReplyErrorKind.MISMATCH, f"not a mode {service:02X} reply")
    body = data[1:]
    if len(body) % 2 == 1:
        body = body[1 : 1 + 2 * body[0]]
    codes: list[str] = []
    for i in range(0, len(body) - 1, 2):
        a, b = body[i], body[i + 1]
        if a == 0 and b == 0:
            continue
        codes.append(f"{'PCBU'[a >> 6]}{(a >> 4) & 0x3}{a & 0x0F:X}{b:02X}")
    return tuple(dict.fromkeys(codes))


def decode_vin(data: bytes) -> str:
    """The VIN from a mode 09 PID 02 reply (``49 02 01`` + 17 ASCII characters).

    python-obd 0.7.3's own VIN decoder strips the characters 0, 1, 2, \\ and x from both ends of
    the VIN (it strips a byte string as if it were a set), so we decode it ourselves.
    """
    if len(data) < 3 or data[0] != 0x49 or data[1] != 0x02:
        raise AdapterReplyError(ReplyErrorKind.MISMATCH, "not a mode 09 PID 02 reply")
    chars = data[3:].replace(b"\x00", b"").decode("ascii", "replace")
    vin = "".join(ch for ch in chars if ch.isalnum())
    if len(vin) != 17:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"VIN of {len(vin)} characters")
    return vin


def parse_voltage(text: str) -> float:
    """Battery voltage from an ATRV reply ("12.6V")."""
    lines = [line for line in reply_lines(text) if line != "ATRV"]
    if not lines:
        raise AdapterReplyError(ReplyErrorKind.SILENCE)
    error = _classify(lines[0])
    if error is not None:
        raise error
    m = _VOLTAGE.match(lines[0])
    if m is None:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, lines[0][:40])
    volts = float(m.group(1))
    if not 0.0 <= volts <= 40.0:
        raise AdapterReplyError(ReplyErrorKind.GARBAGE, f"voltage {volts} out of range")
    return volts
