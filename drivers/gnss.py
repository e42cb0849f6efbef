"""GNSS receiver: NMEA over a serial port, as fixes and link-state samples.

``GNSSStream`` is sans-IO: bytes and timestamps in, samples out. The live ``GNSSReceiver`` thread
and ``telematics-agent replay`` both drive it, so a capture replays into exactly the samples the
live port produced. ``GNSSReceiver`` owns the serial port (pyserial's ``serial_for_url``, so a
device path, a pseudo-terminal or ``socket://host:port`` all work), reconnects with backoff after
an unplug, and reports every link transition as a ``LinkSample``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import serial

from drivers.clock import SystemClockSetter, synchronized_utc
from drivers.nmea import DATE_FLOOR, NMEADecoder, NoFixReason
from drivers.samples import GNSSFix, Link, LinkSample, LinkState, Sample
from drivers.serialio import read_available

logger = logging.getLogger(__name__)

AUTO_BAUDS = (4800, 9600, 19200, 38400, 57600, 115200)
EPOCH_GAP_S = 0.25
"""Silence after which the pending epoch is complete: receivers send an epoch as one burst."""


class _SerialPort(Protocol):
    """What we use of a pyserial port (``serial_for_url`` returns several classes)."""

    baudrate: int

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def reset_input_buffer(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GNSSSettings:
    """What the receiver thread needs; mirrors ``agent.config.GNSSSection`` (drivers do not
    import the agent)."""

    port: str = "/dev/gnss0"
    baud: int = 9600  # 0 = detect among AUTO_BAUDS
    checksum_policy: str = "reject"
    missing_checksum: str = "accept"
    silence_timeout_s: float = 5.0
    set_system_clock: bool = False
    fix_timeout_s: float = 3.0
    read_timeout_s: float = 0.1
    backoff_min_s: float = 0.1
    backoff_max_s: float = 1.0  # short: fixes must resume within seconds of a replug


class GNSSStream:
    """Sans-IO GNSS link: ``feed`` bytes, get ``GNSSFix`` samples and link transitions."""

    def __init__(
        self,
        checksum_policy: str = "reject",
        missing_checksum: str = "accept",
        fix_timeout_s: float = 3.0,
        silence_timeout_s: float = 5.0,
        *,
        date_floor: dt.date = DATE_FLOOR,
        date_hint: Callable[[], dt.datetime | None] | None = None,
    ) -> None:
        self.decoder = NMEADecoder(
            checksum_policy, missing_checksum, date_floor=date_floor, date_hint=date_hint
        )
        self._fix_timeout_s = fix_timeout_s
        self._silence_timeout_s = silence_timeout_s
        self._state: LinkState | None = None
        self._last_bytes: float | None = None
        self._last_fix: float | None = None
        self._epoch_open = False

    @property
    def state(self) -> LinkState | None:
        return self._state

    def feed(self, data: bytes, ts_mono: float) -> list[Sample]:
        out: list[Sample] = []
        if self._last_bytes is None or data:
            self._last_bytes = ts_mono
        if not data:
            return out
        self._epoch_open = True
        for epoch in self.decoder.feed(data, ts_mono):
            self._take(epoch.fix, epoch.reason, ts_mono, out)
        return out

    def _take(
        self, fix: GNSSFix | None, reason: NoFixReason | None, ts_mono: float, out: list[Sample]
    ) -> None:
        if fix is not None:
            self._last_fix = ts_mono
            if self._state is not LinkState.UP:
                out.append(self._transition(ts_mono, LinkState.UP, "fix"))
            out.append(fix)
        elif self._state is not LinkState.NO_FIX:
            out.append(self._transition(ts_mono, LinkState.NO_FIX, str(reason)))

    def _transition(self, ts_mono: float, state: LinkState, reason: str) -> LinkSample:
        if state is LinkState.DOWN:
            logger.warning("GNSS link down: %s", reason)
        else:
            logger.info("GNSS link %s (%s)", state.value, reason)
        self._state = state
        return LinkSample(ts_mono=ts_mono, link=Link.GNSS, state=state, reason=reason)

    def tick(self, ts_mono: float) -> list[Sample]:
        """Time passes without bytes: close a finished epoch, report silence and fix timeouts."""
        out: list[Sample] = []
        if self._last_bytes is None:
            self._last_bytes = ts_mono
            return out
        quiet_s = ts_mono - self._last_bytes
        if self._epoch_open and quiet_s >= EPOCH_GAP_S:
            self._epoch_open = False
            for epoch in self.decoder.flush():
                self._take(epoch.fix, epoch.reason, epoch.ts_mono, out)
        if quiet_s >= self._silence_timeout_s and self._state is not LinkState.DOWN:
            out.append(
                self._transition(
                    ts_mono, LinkState.DOWN, f"no data for {self._silence_timeout_s:g} s"
                )
            )
        elif (
            self._state is LinkState.UP
            and self._last_fix is not None
            and ts_mono - self._last_fix >= self._fix_timeout_s
            and quiet_s < self._fix_timeout_s  # bytes flow but make no fix; else silence rules
        ):
            out.append(
                self._transition(ts_mono, LinkState.NO_FIX, f"no fix for {self._fix_timeout_s:g} s")
            )
        return out

    def device_lost(self, ts_mono: float, reason: str) -> list[Sample]:
        """The port vanished or cannot be opened: emit the epoch already received, drop the
        partial line, report DOWN once."""
        out: list[Sample] = []
        for epoch in self.decoder.flush():
            self._take(epoch.fix, epoch.reason, epoch.ts_mono, out)
        self.decoder.reset()
        self._epoch_open = False
        if self._state is not LinkState.DOWN:
            out.append(self._transition(ts_mono, LinkState.DOWN, reason))
        return out

    def device_back(self, ts_mono: float) -> list[Sample]:
        """The port is open again; the link stays DOWN until epochs arrive."""
        logger.info("GNSS device open again")
        self.decoder.reset()
        self._last_bytes = ts_mono
        return []


class GNSSReceiver:
    """The thread that owns the GNSS serial port and emits samples through ``emit``."""

    def __init__(
        self,
        settings: GNSSSettings,
        emit: Callable[[Sample], None],
        clock: Callable[[], float],
        *,
        clock_setter: SystemClockSetter | None = None,
        date_hint: Callable[[], dt.datetime | None] | None = synchronized_utc,
    ) -> None:
        """``date_hint``: where a receiver that sends no date (GGA only) gets one; by default
        the system clock, only while it is known to be synchronized (``synchronized_utc``)."""
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self._stream = GNSSStream(
            settings.checksum_policy,
            settings.missing_checksum,
            settings.fix_timeout_s,
            settings.silence_timeout_s,
            date_hint=date_hint,
        )
        self._clock_setter = clock_setter
        if clock_setter is None and settings.set_system_clock:
            self._clock_setter = SystemClockSetter(monotonic=clock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: _SerialPort | None = None
        self._detected_baud: int | None = None  # baud = 0: the speed the receiver last talked at
        self._counters = {"reconnects": 0, "open_failures": 0, "read_errors": 0}
        self.last_progress = time.monotonic()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gnss", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("GNSS thread did not stop within %.1f s", timeout_s)
            self._thread = None
        self._close()

    def stats(self) -> dict[str, int]:
        return {**self._stream.decoder.stats(), **self._counters}

    def _send(self, samples: list[Sample]) -> None:
        for sample in samples:
            if isinstance(sample, GNSSFix) and self._clock_setter is not None:
                self._clock_setter.observe(sample.utc, sample.ts_mono)
            self._emit(sample)

    def _run(self) -> None:
        backoff_s = self.settings.backoff_min_s
        while not self._stop.is_set():
            self.last_progress = time.monotonic()
            try:
                if self._port is None:
                    if self._open():
                        backoff_s = self.settings.backoff_min_s
                    else:
                        self._stop.wait(backoff_s)
                        backoff_s = min(backoff_s * 2, self.settings.backoff_max_s)
                        self._send(self._stream.tick(self._clock()))
                    continue
                self._read_once()
            except Exception:
                # Supervision point: whatever a library does, the receiver keeps going.
                logger.exception("GNSS receiver loop failed; reopening the port")
                self._counters["read_errors"] += 1
                self._close()
                self._send(self._stream.device_lost(self._clock(), "receiver error"))
                self._stop.wait(backoff_s)

    def _open(self) -> bool:
        port = self.settings.port
        try:
            baud = self.settings.baud or self._detected_baud or AUTO_BAUDS[1]
            ser: _SerialPort = serial.serial_for_url(
                port, baudrate=baud, timeout=self.settings.read_timeout_s
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._counters["open_failures"] += 1
            self._send(self._stream.device_lost(self._clock(), f"cannot open {port}: {exc}"))
            return False
        if self.settings.baud == 0:
            self._detect_baud(ser)
        self._port = ser
        self._counters["reconnects"] += 1
        self._send(self._stream.device_back(self._clock()))
        return True

    def _detect_baud(self, ser: _SerialPort) -> None:
        """Try each speed until a sentence with a good checksum arrives (1.5 s each).

        The speed found last time goes first: a replugged receiver still talks at it, and
        probing all of AUTO_BAUDS again from 4800 would take up to 9 s before the first fix.
        """
        last = self._detected_baud
        candidates = AUTO_BAUDS if last is None else (last, *(b for b in AUTO_BAUDS if b != last))
        for baud in candidates:
            if self._stop.is_set():
                return
            try:
                ser.baudrate = baud
                ser.reset_input_buffer()
            except (serial.SerialException, OSError, ValueError):
                continue
            probe = NMEADecoder()
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline and not self._stop.is_set():
                self.last_progress = time.monotonic()
                try:
                    data = ser.read(256)
                except (serial.SerialException, OSError):
                    return
                probe.feed(data, 0.0)
                if probe.stats()["sentences_ok"] > 0:
                    logger.info("GNSS receiver talks at %d baud", baud)
                    self._detected_baud = baud
                    return
        logger.warning("GNSS baud rate not detected; staying at %d", ser.baudrate)

    def _read_once(self) -> None:
        port = self._port
        assert port is not None
        try:
            data = read_available(port, self.settings.read_timeout_s)
        except (serial.SerialException, OSError) as exc:
            # A pty whose master closed, or a USB adapter pulled out: pyserial reports
            # "device reports readiness to read but returned no data" or EIO.
            logger.debug("GNSS read failed: %s", exc)
            self._close()
            self._send(self._stream.device_lost(self._clock(), "device disappeared"))
            return
        ts = self._clock()
        if data:
            self._send(self._stream.feed(data, ts))
        self._send(self._stream.tick(ts))

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                logger.debug("closing the GNSS port failed", exc_info=True)
