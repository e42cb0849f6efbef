"""ELM327 emulator: an OBD-II adapter and the engine ECU behind it, answering on a pseudo-terminal.

``ELM327`` is sans-IO: one command line in, the full reply text out (echo, line ends, spaces and
CAN headers as the AT settings say, ending with the ``>`` prompt), and how long the real adapter
would take to give it (``last_reply_s``: serial bytes at the adapter's baud, the ECU's response
latency, CAN frames, and the adapter's wait for further replies as ATST and ATAT set it).
``ELM327Server`` serves it on a ``PtyDevice`` from a thread, taking that long, and can be unplugged
and replugged.

The encoding here is written from the SAE J1979 / ISO 15765-4 formulas and the ELM327 data
sheet, independently of ``drivers/``: the simulator checks the drivers, so it must not share
their code.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from simulator.pty import PtyDevice
from simulator.state import StateSource, VehicleState

logger = logging.getLogger(__name__)

ECU_RESPONSE_ID = "7E8"  # engine ECU's CAN id on ISO 15765-4 11-bit (request 7DF/7E0 + 8)
CAN_MAX_PIDS = 6  # mode byte + 6 PIDs fill the 7 data bytes of one single CAN frame

DEFAULT_BAUD = 38400  # the ELM327's power-on RS232 rate
# One CAN frame of a multi-frame reply: about 0.25 ms on the wire at 500 kbit/s, plus the
# ECU's pacing of consecutive frames (ECUs take 0.3-10 ms; the flow control frame the adapter
# sends after the first frame costs the same).
CAN_FRAME_S = 0.001
ST_DEFAULT = 0x32  # ATST units of 4 ms: 200 ms, the ELM327's default timeout
ST_UNIT_S = 0.004
SEARCH_S = 0.1  # a protocol search that finds CAN 11/500 first (real ones take up to seconds)
# Adaptive timing (ATAT1, the default, and the more aggressive ATAT2) shortens the wait for
# further replies after the last frame to what the ECU's measured response time suggests,
# never beyond ATST. Elm do not publish the algorithm; the emulator waits twice the measured
# response time plus 8 ms (AT1) or the response time plus 4 ms (AT2). At the default 30 ms
# latency that is 68 and 34 ms instead of ATST's 200 ms, in line with the data sheet's "sampling
# rates are often doubled or tripled" by adaptive timing.
AT1_FACTOR, AT1_MARGIN_S = 2.0, 0.008
AT2_FACTOR, AT2_MARGIN_S = 1.0, 0.004


def _u8(value: float) -> list[int]:
    return [max(0, min(255, round(value)))]


def _u16(value: float) -> list[int]:
    v = max(0, min(0xFFFF, round(value)))
    return [v >> 8, v & 0xFF]


def _u32(value: float) -> list[int]:
    v = max(0, min(0xFFFFFFFF, round(value)))
    return [(v >> 24) & 0xFF, (v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF]


def _pct(value: float) -> list[int]:
    return _u8(value * 255.0 / 100.0)


def _temp(value_c: float) -> list[int]:
    return _u8(value_c + 40.0)


# Mode 01 PID -> encoder of the vehicle state, per SAE J1979 scaling. Values beyond a PID's
# range saturate, as the standard asks (PID 31 stays at 65535 km once past it).
_PID_ENCODERS: dict[int, Callable[[VehicleState], list[int]]] = {
    0x04: lambda s: _pct(s.engine_load_pct),
    0x05: lambda s: _temp(s.coolant_c),
    0x0B: lambda s: _u8(s.map_kpa),
    0x0C: lambda s: _u16(s.rpm * 4.0),
    0x0D: lambda s: _u8(s.speed_kmh),
    0x0F: lambda s: _temp(s.intake_c),
    0x10: lambda s: _u16(s.maf_gps * 100.0),
    0x11: lambda s: _pct(s.throttle_pct),
    0x1F: lambda s: _u16(s.runtime_s),
    0x2F: lambda s: _pct(s.fuel_level_pct),
    0x31: lambda s: _u16(s.distance_since_clear_km),  # see ELM327._mode01 for mode 04
    0x42: lambda s: _u16(s.battery_v * 1000.0),
    0x46: lambda s: _temp(s.ambient_c),
    0x5C: lambda s: _temp(s.oil_c),
    0x5E: lambda s: _u16(s.fuel_rate_lph * 20.0),
    0xA6: lambda s: _u32(s.odometer_km * 10.0),
}

DEFAULT_PIDS = frozenset(_PID_ENCODERS)
BITMAP_PIDS = (0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0)


@dataclass(frozen=True, slots=True)
class Variant:
    """Firmware behaviour of one adapter model."""

    name: str
    version: str  # what ATZ and ATI print
    device_description: str  # AT@1
    multi_pid: bool
    garbage_every: int = 0  # every n-th ECU reply is replaced by a bus error or garbage


VARIANTS: dict[str, Variant] = {
    "v1.5": Variant("v1.5", "ELM327 v1.5", "OBDII to RS232 Interpreter", multi_pid=True),
    # The cheap PIC18F25K80 clones print "v2.1" although their firmware is a copy of v1.5 with
    # pieces missing. A multi-PID request is accepted but only the first PID's answer comes back,
    # which is what owners of such clones report (the ECU reply is never fully decoded); a driver
    # must notice the missing PIDs and fall back to one PID per request.
    "clone-v2.1": Variant("clone-v2.1", "ELM327 v2.1", "OBDII to RS232 Interpreter", False),
    # A healthy adapter on a noisy bus: every fifth ECU reply is an error line or corrupted text.
    "noisy-v1.5": Variant(
        "noisy-v1.5", "ELM327 v1.5", "OBDII to RS232 Interpreter", True, garbage_every=5
    ),
}

_GARBAGE_REPLIES = (
    "CAN ERROR",
    "BUS INIT: ...ERROR",
    "STOPPED",
    "?",
    "7E8 06 41 0G ZZ",
    "\x00\x00\xff",
    "BUFFER FULL",
    "7E8 10",
    "",
)


@dataclass(frozen=True, slots=True)
class BusTiming:
    """The vehicle side of one request, between the request's last serial byte and the prompt."""

    first_s: float  # until the first frame; for a reply without frames, until the adapter gives up
    frames: int  # CAN frames the adapter prints
    wait_s: float = 0.0  # after the last frame, waiting for replies that may still come


_AT_ONCE = BusTiming(0.0, 0)  # AT commands and refused requests never reach the bus


def _protocol_description(auto: bool) -> str:
    return ("AUTO, " if auto else "") + "ISO 15765-4 (CAN 11/500)"


class ELM327:
    """One ELM327 adapter's command interpreter plus the engine ECU it talks to (sans-IO)."""

    def __init__(
        self,
        variant: str = "v1.5",
        latency_s: float = 0.03,
        pids: Iterable[int] | None = None,
        baud: int = DEFAULT_BAUD,
        frame_s: float = CAN_FRAME_S,
    ) -> None:
        """``latency_s``: the ECU's response time to a request (to its first frame)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown ELM327 variant {variant!r}; known: {', '.join(VARIANTS)}")
        if baud <= 0:
            raise ValueError(f"baud must be positive, not {baud}")
        self.variant = VARIANTS[variant]
        self.latency_s = latency_s
        self.baud = baud
        self.frame_s = frame_s
        self.pids = frozenset(DEFAULT_PIDS if pids is None else pids)
        unknown = self.pids - DEFAULT_PIDS
        if unknown:
            raise ValueError(f"PIDs the emulator cannot answer: {sorted(unknown)}")
        self.ecu_requests = 0
        self.last_was_ecu = False
        self.last_reply_s = 0.0  # how long the real adapter takes for the last command
        # The ECU's memory, which an adapter reset does not touch: what mode 04 cleared.
        self._cleared_at_odometer_km: float | None = None
        self._cleared_codes: dict[int, set[str]] = {0x03: set(), 0x07: set()}
        self.reset()

    def reset(self) -> None:
        """Power-on defaults, as after ATZ or plugging the adapter in."""
        self.echo = True
        self.linefeeds = False
        self.spaces = True
        self.headers = False
        self.protocol_auto = True
        self.protocol = "0"
        self.protocol_found = False
        self.timeout_st = ST_DEFAULT  # ATST, in units of 4 ms
        self.adaptive = 1  # ATAT0/1/2
        self._measured_s: float | None = None  # the ECU response time adaptive timing learned
        self._last = ""

    # ---- reply formatting ----

    def _eol(self) -> str:
        return "\r\n" if self.linefeeds else "\r"

    def _finish(self, echo_on: bool, command: str, lines: list[str]) -> str:
        eol = self._eol()
        echo = command + eol if echo_on else ""
        return echo + "".join(line + eol for line in lines) + eol + ">"

    def _hex(self, data: Iterable[int]) -> str:
        sep = " " if self.spaces else ""
        return sep.join(f"{b:02X}" for b in data)

    def _can_frames(self, payload: list[int], limit: int) -> list[str]:
        """ISO-TP framing of one ECU reply, shown the way the ELM327 prints it: the first
        ``limit`` frames (a response-count digit makes the adapter stop early)."""
        sep = " " if self.spaces else ""
        if len(payload) <= 7:
            if self.headers:
                return [ECU_RESPONSE_ID + sep + self._hex([len(payload), *payload])]
            return [self._hex(payload)]
        first = payload[:6]
        rest = payload[6:]
        chunks = [rest[i : i + 7] for i in range(0, len(rest), 7)][: max(limit - 1, 0)]
        if self.headers:
            lines = [
                ECU_RESPONSE_ID
                + sep
                + self._hex([0x10 | (len(payload) >> 8), len(payload) & 0xFF, *first])
            ]
            for i, chunk in enumerate(chunks, start=1):
                padded = chunk + [0x00] * (7 - len(chunk))  # CFs go out padded to 8 bytes
                lines.append(ECU_RESPONSE_ID + sep + self._hex([0x20 | (i & 0x0F), *padded]))
            return lines
        # Headers off: the ELM prints the length, then numbered segments ("0:", "1:", ...).
        lines = [f"{len(payload):03X}", f"0:{sep}" + self._hex(first)]
        lines += [f"{i & 0x0F:X}:{sep}" + self._hex(chunk) for i, chunk in enumerate(chunks, 1)]
        return lines

    # ---- commands ----

    def handle(self, command: str, state: VehicleState) -> str:
        """The full reply to one command line (without its CR), ending with the prompt.

        Also sets ``last_reply_s``: from the command's first byte to the prompt's last.
        """
        raw = command.strip("\r\n")
        shown = raw
        echo_on = self.echo  # the chip echoes while it receives, before it runs the command
        self.last_was_ecu = False
        # The ELM327 ignores spaces and control characters and is case-insensitive.
        text = "".join(ch for ch in raw if ch.isprintable() and not ch.isspace()).upper()
        if not text and not raw and self._last:
            # A lone CR repeats the previous command (python-obd's "fast" mode relies on it).
            text = self._last
        bus = _AT_ONCE
        if not text:
            lines = ["?"]
        elif text.startswith("AT"):
            lines = self._at(text[2:], state)
        else:
            self._last = text
            self.last_was_ecu = True
            lines, bus = self._obd(text, state)
        # Echoed bytes go out while the command comes in, so they cost no time of their own.
        self.last_reply_s = self._reply_time_s(len(raw) + 1, lines, bus)
        return self._finish(echo_on, shown, lines)

    def _byte_s(self) -> float:
        return 10.0 / self.baud  # 8N1: a start and a stop bit around every byte

    def _reply_time_s(self, sent_bytes: int, lines: list[str], bus: BusTiming) -> float:
        byte_s = self._byte_s()
        eol = len(self._eol())
        body_s = sum(len(line) + eol for line in lines) * byte_s
        prompt_s = (eol + 1) * byte_s  # the empty line, then ">"
        start = sent_bytes * byte_s + bus.first_s
        if bus.frames == 0:
            return start + body_s + prompt_s
        # The adapter prints each frame as it arrives (and sends flow control after a first
        # frame), then waits, if it must, for replies that may still come.
        frames_done = start + (bus.frames - 1 + (bus.frames > 1)) * self.frame_s
        printed = max(start + body_s, frames_done + (len(lines[-1]) + eol) * byte_s)
        return max(printed, frames_done + bus.wait_s) + prompt_s

    def _timeout_s(self) -> float:
        return self.timeout_st * ST_UNIT_S

    def _wait_after_last_frame_s(self) -> float:
        """How long the adapter listens for more replies after the last frame it got."""
        if self.adaptive == 0 or self._measured_s is None:
            return self._timeout_s()
        if self.adaptive == 1:
            factor, margin = AT1_FACTOR, AT1_MARGIN_S
        else:
            factor, margin = AT2_FACTOR, AT2_MARGIN_S
        return min(self._timeout_s(), factor * self._measured_s + margin)

    def _at(self, cmd: str, state: VehicleState) -> list[str]:
        toggles = {"E": "echo", "L": "linefeeds", "S": "spaces", "H": "headers"}
        if cmd == "Z" or cmd == "WS":
            self.reset()
            return ["", self.variant.version]
        if cmd == "D":
            self.reset()
            self.echo = True
            return ["OK"]
        if len(cmd) == 2 and cmd[0] in toggles and cmd[1] in "01":
            setattr(self, toggles[cmd[0]], cmd[1] == "1")
            return ["OK"]
        if cmd == "I":
            return [self.variant.version]
        if cmd == "@1":
            return [self.variant.device_description]
        if cmd == "RV":
            return [f"{state.battery_v:.1f}V"]
        if cmd == "DPN":
            if not self.protocol_found:
                return ["A0" if self.protocol_auto else "6"]
            return ["A6" if self.protocol_auto else "6"]
        if cmd == "DP":
            return [_protocol_description(self.protocol_auto)]
        if cmd.startswith(("SP", "TP")) and len(cmd) == 3 and cmd[2] in "0123456789ABC":
            # ATTP ("try protocol") falls back to a search; ATSP with a number insists on it.
            self.protocol_auto = cmd[2] == "0" or cmd.startswith("TP")
            self.protocol = cmd[2]
            # The emulated car only speaks protocol 6, so a search always lands there.
            self.protocol_found = cmd[2] == "6"
            return ["OK"]
        if cmd.startswith("ST") and len(cmd) == 4 and _is_hex(cmd[2:]):
            self.timeout_st = int(cmd[2:], 16) or ST_DEFAULT  # ATST00 restores the default
            return ["OK"]
        if cmd in ("AT0", "AT1", "AT2"):
            self.adaptive = int(cmd[2])
            return ["OK"]
        if cmd in ("CAF0", "CAF1", "M0", "M1", "PC"):
            return ["OK"]
        if cmd.startswith("SH") and len(cmd) in (5, 8, 10) and _is_hex(cmd[2:]):
            return ["OK"]
        return ["?"]

    def _obd(self, text: str, state: VehicleState) -> tuple[list[str], BusTiming]:
        if not _is_hex(text) or len(text) < 2:
            return ["?"], _AT_ONCE
        # An odd length means a trailing response-count digit (ELM327 v1.3+): "010D1" returns
        # as soon as that many frames are in, without waiting for other ECUs.
        count: int | None = None
        if len(text) % 2 == 1:
            count = int(text[-1], 16) or None
            text = text[:-1]
        data = list(bytes.fromhex(text))
        if len(data) > 7:
            # With CAN auto-formatting the chip sends single frames only: the PCI byte and at
            # most 7 data bytes. A longer request (7 PIDs and more) is refused before it
            # reaches the bus; SAE J1979 allows at most 6 PIDs per mode 01 request anyway.
            return ["?"], _AT_ONCE
        timeout = self._timeout_s()
        if not self.protocol_found and not self.protocol_auto:
            # Pinned to a bus this car does not have: K-line inits fail, others hear nothing.
            lines = ["BUS INIT: ...ERROR" if self.protocol in "345" else "NO DATA"]
            return lines, BusTiming(timeout, 0)
        prefix: list[str] = []
        search_s = 0.0
        if not self.protocol_found:
            prefix = ["SEARCHING..."]
            search_s = SEARCH_S
            if not state.ignition:
                return [*prefix, "UNABLE TO CONNECT"], BusTiming(search_s + timeout, 0)
            self.protocol_found = True
        self.ecu_requests += 1
        silent = BusTiming(search_s + timeout, 0)  # the ECU does not answer: NO DATA after ATST
        if not state.ignition:
            return [*prefix, "NO DATA"], silent
        every = self.variant.garbage_every
        if every and self.ecu_requests % every == 0:
            garbage = _GARBAGE_REPLIES[(self.ecu_requests // every) % len(_GARBAGE_REPLIES)]
            return [*prefix, garbage], self._answered(search_s, count, 1, 1)
        payload = self._ecu(data, state)
        if payload is None:
            return [*prefix, "NO DATA"], silent
        frames = _frame_count(len(payload))
        shown = frames if count is None else min(frames, count)
        timing = self._answered(search_s, count, frames, shown)
        return [*prefix, *self._can_frames(payload, shown)], timing

    def _answered(self, search_s: float, count: int | None, frames: int, shown: int) -> BusTiming:
        """Timing of an ECU reply of ``frames`` frames, of which the adapter prints ``shown``.

        The adapter's wait after the last frame is what adaptive timing had learned before this
        reply; this reply's response time then updates what it learned.
        """
        timing = BusTiming(search_s + self.latency_s, shown, self._wait_after(count, frames))
        self._measured_s = self.latency_s
        return timing

    def _wait_after(self, count: int | None, frames: int) -> float:
        """No wait once the frames a response-count digit asked for are in."""
        if count is not None and frames >= count:
            return 0.0
        return self._wait_after_last_frame_s()

    def _ecu(self, data: list[int], state: VehicleState) -> list[int] | None:
        mode, pids = data[0], data[1:]
        if mode == 0x01 and pids:
            if len(pids) > 1 and not self.variant.multi_pid:
                pids = pids[:1]
            out = [0x41]
            for pid in pids:
                value = self._mode01(pid, state)
                if value is not None:
                    out += [pid, *value]
            return out if len(out) > 1 else None
        if mode in (0x03, 0x07) and not pids:
            codes = self._codes(mode, state)
            out = [0x40 + mode, len(codes)]
            for code in codes:
                out += _encode_dtc(code)
            return out
        if mode == 0x04 and not pids:
            # Clear diagnostic information: stored and pending codes, and the distance since
            # codes were cleared (PID 31) starts again from zero.
            self._cleared_codes = {0x03: set(state.dtcs), 0x07: set(state.pending_dtcs)}
            self._cleared_at_odometer_km = state.odometer_km
            return [0x44]
        if mode == 0x09 and pids == [0x02]:
            return [0x49, 0x02, 0x01, *state.vin.encode("ascii", "replace")[:17]]
        if mode == 0x09 and pids == [0x00]:
            return [0x49, 0x00, 0x40, 0x00, 0x00, 0x00]  # only PID 02 (VIN)
        return None

    def _mode01(self, pid: int, state: VehicleState) -> list[int] | None:
        if pid in BITMAP_PIDS:
            if pid != 0x00 and not any(p > pid for p in self.pids):
                return None  # the previous bitmap did not announce this one
            bits = 0
            for p in self.pids:
                if pid < p <= pid + 0x20:
                    bits |= 1 << (32 - (p - pid))
            if any(p > pid + 0x20 for p in self.pids):
                bits |= 1  # the next bitmap PID is supported
            return _u32(bits)
        if pid not in self.pids:
            return None
        if pid == 0x31 and self._cleared_at_odometer_km is not None:
            # The latest clear counts: mode 04 here, or a scenario's own clear after it.
            since_km = max(state.odometer_km - self._cleared_at_odometer_km, 0.0)
            return _u16(min(since_km, state.distance_since_clear_km))
        return _PID_ENCODERS[pid](state)

    def _codes(self, mode: int, state: VehicleState) -> list[str]:
        """The vehicle's codes minus those mode 04 cleared. A cleared code the vehicle model
        later drops is forgotten, so it shows again when the model sets it again."""
        present = state.dtcs if mode == 0x03 else state.pending_dtcs
        cleared = self._cleared_codes[mode]
        cleared &= set(present)
        return [code for code in present if code not in cleared]


def _frame_count(length: int) -> int:
    """ISO-TP frames of a reply of ``length`` bytes: 7 in a single frame, else 6 in the first
    frame and 7 in each consecutive frame."""
    return 1 if length <= 7 else 1 + -(-(length - 6) // 7)


def _is_hex(text: str) -> bool:
    return bool(text) and all(ch in "0123456789ABCDEF" for ch in text.upper())


def _encode_dtc(code: str) -> list[int]:
    """ "P0301" -> [0x03, 0x01]: two bits of system letter, then the 14 remaining bits."""
    letter = "PCBU".find(code[:1].upper())
    digits = code[1:5]
    if letter < 0 or len(digits) != 4 or not _is_hex(digits):
        return [0x00, 0x00]
    first = int(digits[0], 16)
    return [(letter << 6) | ((first & 0x3) << 4) | int(digits[1], 16), int(digits[2:4], 16)]


class ELM327Server:
    """Serves one emulated ELM327 on a pseudo-terminal behind ``link_path``, from a thread."""

    def __init__(
        self,
        source: StateSource,
        link_path: Path,
        variant: str = "v1.5",
        latency_s: float = 0.03,
        pids: Iterable[int] | None = None,
        baud: int = DEFAULT_BAUD,
    ) -> None:
        self.source = source
        self.elm = ELM327(variant, latency_s, pids, baud)
        self.device = PtyDevice(link_path)
        self.silent = False  # True: swallow commands and answer nothing (a hung adapter)
        # True: answer everything with junk and a prompt (broken counterfeit firmware).
        self.babbling = False
        self._junk = random.Random(0)
        self._manual_unplug = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.commands_served = 0
        self.busy_s = 0.0  # modelled adapter time of every reply so far (serial and bus)

    @property
    def path(self) -> Path:
        return self.device.link_path

    def start(self) -> None:
        self.device.plug()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="elm327-emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.device.unplug()

    def unplug(self) -> None:
        self._manual_unplug = True
        self.device.unplug()

    def replug(self) -> None:
        self._manual_unplug = False
        self.elm.reset()  # a replugged adapter powers up fresh
        self.device.replug()

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            state = self.source.state()
            if not state.obd_online and self.device.online:
                self.device.unplug()
                buffer = b""
            elif state.obd_online and not self.device.online and not self._manual_unplug:
                self.elm.reset()
                self.device.replug()
            if not self.device.online:
                self._stop.wait(0.02)
                continue
            chunk = self.device.read(0.02)
            if not chunk:
                continue
            buffer += chunk
            while b"\r" in buffer:
                line, buffer = buffer.split(b"\r", 1)
                self._answer(line.decode("ascii", "replace"))
            if len(buffer) > 256:  # a flood without CR: the real ELM answers "?" and drops it
                buffer = b""
                self.device.write(b"?\r\r>")

    def _answer(self, line: str) -> None:
        if self.silent:
            return
        if self.babbling:
            size = self._junk.randint(0, 40)
            junk = "".join(self._junk.choice("0123456789ABCDEFXYZ :.?\r") for _ in range(size))
            self.device.write((junk + "\r\r>").encode("ascii"))
            return
        started = time.monotonic()
        state = self.source.state()
        reply = self.elm.handle(line, state)
        # The whole reply goes out when the real adapter would have sent its last byte: the
        # pty itself is instantaneous, so the serial line's pace is modelled here too.
        delay = self.elm.last_reply_s
        if delay > 0 and not math.isnan(delay):
            self.busy_s += delay
            left = started + delay - time.monotonic()
            if left > 0:
                time.sleep(left)
        self.commands_served += 1
        logger.debug("ELM327 %r -> %r", line, reply)
        self.device.write(reply.encode("latin-1", "replace"))
