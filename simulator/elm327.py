"""ELM327 emulator: an OBD-II adapter and the engine ECU behind it, answering on a pseudo-terminal.

``ELM327`` is sans-IO: one command line in, the full reply text out (echo, line ends, spaces and
CAN headers as the AT settings say, ending with the ``>`` prompt). ``ELM327Server`` serves it on a
``PtyDevice`` from a thread, after a configurable latency, and can be unplugged and replugged.

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


# Mode 01 PID -> encoder of the vehicle state, per SAE J1979 scaling. The model has no throttle,
# ambient or oil temperature, so those are stand-ins derived from the nearest modelled value.
_PID_ENCODERS: dict[int, Callable[[VehicleState], list[int]]] = {
    0x04: lambda s: _pct(s.engine_load_pct),
    0x05: lambda s: _temp(s.coolant_c),
    0x0B: lambda s: _u8(s.map_kpa),
    0x0C: lambda s: _u16(s.rpm * 4.0),
    0x0D: lambda s: _u8(s.speed_kmh),
    0x0F: lambda s: _temp(s.intake_c),
    0x10: lambda s: _u16(s.maf_gps * 100.0),
    0x11: lambda s: _pct(s.engine_load_pct),  # throttle: load stands in
    0x1F: lambda s: _u16(s.runtime_s),
    0x2F: lambda s: _pct(s.fuel_level_pct),
    0x31: lambda s: _u16(s.odometer_km),  # distance since codes cleared: never cleared
    0x42: lambda s: _u16(s.battery_v * 1000.0),
    0x46: lambda s: _temp(s.intake_c),  # ambient: intake air stands in
    0x5C: lambda s: _temp(s.coolant_c),  # oil: coolant stands in
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


def _protocol_description(auto: bool) -> str:
    return ("AUTO, " if auto else "") + "ISO 15765-4 (CAN 11/500)"


class ELM327:
    """One ELM327 adapter's command interpreter plus the engine ECU it talks to (sans-IO)."""

    def __init__(
        self,
        variant: str = "v1.5",
        latency_s: float = 0.03,
        pids: Iterable[int] | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown ELM327 variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant = VARIANTS[variant]
        self.latency_s = latency_s
        self.pids = frozenset(DEFAULT_PIDS if pids is None else pids)
        unknown = self.pids - DEFAULT_PIDS
        if unknown:
            raise ValueError(f"PIDs the emulator cannot answer: {sorted(unknown)}")
        self.ecu_requests = 0
        self.last_was_ecu = False
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

    def _can_frames(self, payload: list[int]) -> list[str]:
        """ISO-TP framing of one ECU reply, shown the way the ELM327 prints it."""
        sep = " " if self.spaces else ""
        if len(payload) <= 7:
            if self.headers:
                return [ECU_RESPONSE_ID + sep + self._hex([len(payload), *payload])]
            return [self._hex(payload)]
        first = payload[:6]
        rest = payload[6:]
        chunks = [rest[i : i + 7] for i in range(0, len(rest), 7)]
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
        """The full reply to one command line (without its CR), ending with the prompt."""
        raw = command.strip("\r\n")
        shown = raw
        echo_on = self.echo  # the chip echoes while it receives, before it runs the command
        self.last_was_ecu = False
        # The ELM327 ignores spaces and control characters and is case-insensitive.
        text = "".join(ch for ch in raw if ch.isprintable() and not ch.isspace()).upper()
        if not text:
            if not raw and self._last:
                # A lone CR repeats the previous command (python-obd's "fast" mode relies on it).
                text = self._last
            else:
                return self._finish(echo_on, shown, ["?"])
        if text.startswith("AT"):
            return self._finish(echo_on, shown, self._at(text[2:], state))
        self._last = text
        self.last_was_ecu = True
        return self._finish(echo_on, shown, self._obd(text, state))

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
            return ["OK"]
        if cmd in ("AT0", "AT1", "AT2", "CAF0", "CAF1", "M0", "M1", "PC"):
            return ["OK"]
        if cmd.startswith("SH") and len(cmd) in (5, 8, 10) and _is_hex(cmd[2:]):
            return ["OK"]
        return ["?"]

    def _obd(self, text: str, state: VehicleState) -> list[str]:
        if not _is_hex(text) or len(text) < 2:
            return ["?"]
        # An odd length means a trailing response-count digit (ELM327 v1.3+): "010D1".
        if len(text) % 2 == 1:
            text = text[:-1]
        data = list(bytes.fromhex(text))
        if len(data) > 7:
            return ["?"]  # more than one CAN frame of request data
        prefix: list[str] = []
        if not self.protocol_found and not self.protocol_auto:
            # Pinned to a bus this car does not have: K-line inits fail, others hear nothing.
            return ["BUS INIT: ...ERROR" if self.protocol in "345" else "NO DATA"]
        if not self.protocol_found:
            prefix = ["SEARCHING..."]
            if not state.ignition:
                return [*prefix, "UNABLE TO CONNECT"]
            self.protocol_found = True
        self.ecu_requests += 1
        if not state.ignition:
            return [*prefix, "NO DATA"]
        every = self.variant.garbage_every
        if every and self.ecu_requests % every == 0:
            garbage = _GARBAGE_REPLIES[(self.ecu_requests // every) % len(_GARBAGE_REPLIES)]
            return [*prefix, garbage]
        payload = self._ecu(data, state)
        if payload is None:
            return [*prefix, "NO DATA"]
        return [*prefix, *self._can_frames(payload)]

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
            codes = state.dtcs if mode == 0x03 else state.pending_dtcs
            out = [0x40 + mode, len(codes)]
            for code in codes:
                out += _encode_dtc(code)
            return out
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
        return _PID_ENCODERS[pid](state)


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
    ) -> None:
        self.source = source
        self.elm = ELM327(variant, latency_s, pids)
        self.device = PtyDevice(link_path)
        self.silent = False  # True: swallow commands and answer nothing (a hung adapter)
        # True: answer everything with junk and a prompt (broken counterfeit firmware).
        self.babbling = False
        self._junk = random.Random(0)
        self._manual_unplug = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.commands_served = 0

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
        state = self.source.state()
        reply = self.elm.handle(line, state)
        if self.elm.last_was_ecu:
            # Only ECU requests wait for the bus; AT commands are answered by the chip at once.
            delay = self.elm.latency_s
            if "SEARCHING" in reply:
                delay += 0.1
            if delay > 0 and not math.isnan(delay):
                time.sleep(delay)
        self.commands_served += 1
        logger.debug("ELM327 %r -> %r", line, reply)
        self.device.write(reply.encode("latin-1", "replace"))
