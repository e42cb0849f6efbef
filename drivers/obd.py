"""OBD-II reader: an ELM327 adapter, through python-obd, polled on a per-PID schedule.

python-obd opens the port, resets the adapter and detects the protocol. After that, requests go
straight to the serial port python-obd opened, because python-obd sends one PID per request,
drops the adapter's error lines without saying which, and waits up to ten seconds on a silent
adapter; our own bounded request/reply loop and the sans-IO parser in ``drivers.elm327`` count
every failure by kind and can ask for up to six PIDs at once on CAN. python-obd objects and pint
quantities never leave this module: it emits ``drivers.samples`` values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drivers.elm327 import (
    BITMAP_PIDS,
    PIDS,
    AdapterReplyError,
    ReplyErrorKind,
    decode_bitmap,
    decode_dtcs,
    decode_mode01,
    decode_vin,
    parse_reply,
    parse_voltage,
    reply_lines,
)
from drivers.errors import DeviceUnavailableError
from drivers.pyobd import import_obd
from drivers.samples import (
    DTCSample,
    FuelRateSource,
    Link,
    LinkSample,
    LinkState,
    OBDReading,
    Sample,
    VehicleInfo,
)
from drivers.serialio import read_available

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

AIR_GAS_CONSTANT_J_PER_KG_K = 287.05
CAN_PROTOCOLS = ("6", "7", "8", "9")  # ELM327 protocol numbers of ISO 15765-4
# Replies that no working adapter gives to our well-formed requests.
NONSENSE_KINDS = frozenset(
    {ReplyErrorKind.GARBAGE, ReplyErrorKind.MISMATCH, ReplyErrorKind.UNKNOWN_COMMAND}
)


@dataclass(frozen=True, slots=True)
class Fuel:
    """What the MAF and speed-density derivations need to know about the fuel burned."""

    stoich_afr: float  # kg of air per kg of fuel at lambda 1
    density_g_per_l: float  # at 15 °C


# Stoichiometric ratios and densities: petrol 14.7 and 720-775 g/L (EN 228), diesel 14.5 and
# 820-845 g/L (EN 590), LPG 15.5 (propane 15.7, butane 15.4) and ~540 g/L for a typical
# autogas propane/butane mix. Diesels run lean (lambda 1.3 and above at part load), so the MAF
# derivation over-reads diesel fuel rate; PID 5E is always preferred when the ECU has it.
FUELS: dict[str, Fuel] = {
    "petrol": Fuel(14.7, 745.0),
    "diesel": Fuel(14.5, 832.0),
    "lpg": Fuel(15.5, 540.0),
}


@dataclass(frozen=True, slots=True)
class OBDSettings:
    """The driver's settings; mirrors ``agent.config.OBDSection`` (drivers never import agent)."""

    port: str = "/dev/obd0"
    baud: int = 38400  # 0 = let python-obd detect it
    fuel_type: str = "diesel"
    displacement_l: float = 2.0
    volumetric_efficiency: float = 0.85
    fast_hz: float = 2.0
    medium_hz: float = 1.0
    slow_interval_s: float = 10.0
    dtc_interval_s: float = 300.0
    voltage_interval_s: float = 30.0
    low_voltage_v: float = 11.8
    multi_pid: str = "auto"  # "auto" | "on" | "off"
    timeout_s: float = 1.0
    # ELM327 protocol number to use instead of the automatic search ("6" = CAN 11/500); the
    # search costs python-obd three seconds of fixed waits per connection.
    protocol: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in ("", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A"):
            raise ValueError(
                f"protocol must be 1-9 or A (or empty for automatic), not {self.protocol!r}"
            )
        if self.fuel_type not in FUELS:
            raise ValueError(f"fuel_type must be one of {', '.join(FUELS)}, not {self.fuel_type!r}")
        if self.multi_pid not in ("auto", "on", "off"):
            raise ValueError(f"multi_pid must be auto, on or off, not {self.multi_pid!r}")
        if min(self.fast_hz, self.medium_hz, self.slow_interval_s, self.timeout_s) <= 0:
            raise ValueError("poll rates, intervals and timeout must be positive")


# ---- fuel rate ----


def maf_fuel_rate_lph(maf_gps: float, fuel: Fuel) -> float:
    """Fuel burned at stoichiometric combustion of the measured air mass flow."""
    return maf_gps * 3600.0 / (fuel.stoich_afr * fuel.density_g_per_l)


def speed_density_maf_gps(
    map_kpa: float, intake_c: float, rpm: float, displacement_l: float, ve: float
) -> float:
    """Air mass flow from the ideal gas law: a four-stroke fills its displacement every 2 turns."""
    volume_m3_per_s = displacement_l / 1000.0 * rpm / 120.0 * ve
    density_kg_per_m3 = map_kpa * 1000.0 / (AIR_GAS_CONSTANT_J_PER_KG_K * (intake_c + 273.15))
    return volume_m3_per_s * density_kg_per_m3 * 1000.0


class ReadingBuilder:
    """Turns one round's decoded PIDs into an ``OBDReading``, deriving fuel rate when needed.

    Speed-density needs RPM and intake temperature, which are polled in other rounds, so the
    newest of those is remembered (for at most ``max_age_s``).
    """

    def __init__(self, settings: OBDSettings, max_age_s: float = 5.0) -> None:
        self.settings = settings
        self.fuel = FUELS[settings.fuel_type]
        self.max_age_s = max_age_s
        self._recent: dict[str, tuple[float, float]] = {}  # name -> (ts_mono, value)

    def _recall(self, name: str, ts: float) -> float | None:
        got = self._recent.get(name)
        if got is None or ts - got[0] > self.max_age_s:
            return None
        return got[1]

    def build(
        self, ts: float, raw: dict[int, bytes], supported: Iterable[int] = ()
    ) -> OBDReading | None:
        """``supported``: the car's PIDs, when known. A derivation is used only when no better
        source is supported, so one-PID-per-request rounds (clones, captures) never report a
        MAF figure for a car whose ECU reports PID 5E in another request."""
        known = frozenset(supported)
        values: dict[str, float] = {}
        for pid, data in raw.items():
            spec = PIDS.get(pid)
            if spec is not None and spec.name:
                values[spec.name] = spec.decode(data)
        for name in ("rpm", "intake_c"):
            if name in values:
                self._recent[name] = (ts, values[name])
        if not values:
            return None
        fields: dict[str, Any] = dict(values)
        if "fuel_rate_lph" in values:
            fields["fuel_rate_source"] = FuelRateSource.PID_5E
        elif "maf_gps" in values and 0x5E not in known:
            fields["fuel_rate_lph"] = maf_fuel_rate_lph(values["maf_gps"], self.fuel)
            fields["fuel_rate_source"] = FuelRateSource.MAF
        elif "map_kpa" in values and not known & {0x5E, 0x10}:
            rpm = values.get("rpm", self._recall("rpm", ts))
            intake = values.get("intake_c", self._recall("intake_c", ts))
            if rpm is not None and intake is not None:
                air_gps = speed_density_maf_gps(
                    values["map_kpa"],
                    intake,
                    rpm,
                    self.settings.displacement_l,
                    self.settings.volumetric_efficiency,
                )
                fields["fuel_rate_lph"] = maf_fuel_rate_lph(air_gps, self.fuel)
                fields["fuel_rate_source"] = FuelRateSource.SPEED_DENSITY
        return OBDReading(ts_mono=ts, **fields)


# ---- poll plan ----


@dataclass(frozen=True, slots=True)
class PollGroup:
    """PIDs read together in one round, and how often."""

    name: str
    interval_s: float
    pids: tuple[int, ...]


def poll_groups(settings: OBDSettings) -> tuple[PollGroup, ...]:
    """The default plan, the same as the capture schedule: at most six PIDs per group."""
    return (
        PollGroup("fast", 1.0 / settings.fast_hz, (0x0D, 0x0C)),
        PollGroup("medium", 1.0 / settings.medium_hz, (0x04, 0x5E, 0x10, 0x0B, 0x0F)),
        PollGroup("slow", settings.slow_interval_s, (0x05, 0x2F, 0x1F, 0x31, 0xA6)),
    )


def mode01_requests(pids: Iterable[int], multi: bool) -> list[str]:
    """Request strings for one group: one multi-PID request on CAN, else one per PID."""
    chosen = list(pids)
    if not chosen:
        return []
    if multi:
        batches = [chosen[i : i + 6] for i in range(0, len(chosen), 6)]
        return ["01" + "".join(f"{p:02X}" for p in batch) for batch in batches]
    return [f"01{p:02X}" for p in chosen]


def can_frames(pids: Iterable[int]) -> int:
    """ISO-TP frames of the reply to one mode 01 request on CAN: 7 bytes in a single frame,
    else 6 in the first and 7 in each consecutive frame."""
    length = 1 + sum(1 + (PIDS[p].length if p in PIDS else 4) for p in pids)
    return 1 if length <= 7 else 1 + -(-(length - 6) // 7)


# ---- the serial channel ----


READ_SLICE_S = 0.1


class ELM327Channel:
    """Request/reply on the adapter's serial port with a hard deadline (no python-obd waits)."""

    def __init__(self, port: Any, timeout_s: float) -> None:
        self._port = port
        self.timeout_s = timeout_s
        # python-obd opens the port with a 10 s read timeout; we read in slices instead, so a
        # silent adapter overruns the deadline by at most one slice. A read returns as soon as
        # a byte is there, so the slice adds no latency; it only bounds idle wake-ups.
        self._port.timeout = READ_SLICE_S

    def request(self, command: str, timeout_s: float | None = None) -> str:
        """Send one command and return the reply text up to the prompt.

        Raises ``DeviceUnavailableError`` when the port is gone and
        ``AdapterReplyError(SILENCE)`` when no prompt arrives within the timeout.
        """
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        buf = bytearray()
        try:
            self._port.reset_input_buffer()
            self._port.write(command.encode("ascii") + b"\r")
            while (left := deadline - time.monotonic()) > 0:
                chunk = read_available(self._port, min(left, READ_SLICE_S))
                if chunk:
                    buf += chunk
                    if b">" in buf:
                        break
                    if len(buf) > 8192:
                        raise AdapterReplyError(ReplyErrorKind.GARBAGE, "endless reply")
            else:
                raise AdapterReplyError(
                    ReplyErrorKind.SILENCE, f"no prompt after {command!r} ({len(buf)} bytes)"
                )
        except (OSError, termios.error) as exc:
            # pyserial's SerialException is an OSError; its buffer flush on a vanished pty
            # raises termios.error, which is not.
            raise DeviceUnavailableError(f"adapter port failed: {exc}") from exc
        return buf.split(b">", 1)[0].decode("ascii", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._port.close()


# ---- the adapter session ----


@dataclass(slots=True)
class Session:
    """One open connection to the adapter, and what we learned about the car through it."""

    connection: Any  # obd.OBD; kept so python-obd can close it
    channel: ELM327Channel
    adapter: str
    protocol_id: str = ""
    protocol: str = ""
    supported: frozenset[int] = frozenset()
    vin: str | None = None
    multi: bool = False
    low_voltage: bool = False
    short_replies: int = 0  # multi-PID replies in a row that lacked some of the PIDs
    last_voltage_v: float | None = None
    due: dict[str, float] = field(default_factory=dict)


def _quiet_python_obd() -> None:
    # python-obd installs its own stderr handler and logs every failed connection attempt at
    # ERROR and every unplug at CRITICAL; our own logs report those as state transitions.
    obd_logger = logging.getLogger("obd")
    obd_logger.setLevel(logging.CRITICAL + 1)


def open_session(settings: OBDSettings, protocol_hint: str | None) -> Session:
    """Connect with python-obd: reset, echo off, headers on, voltage check, protocol detection."""
    obd = import_obd()  # late, and without pint: see drivers.pyobd

    _quiet_python_obd()
    if "://" not in settings.port and not os.path.exists(settings.port):
        raise DeviceUnavailableError(f"{settings.port}: no such device")
    preflight(settings)
    connection = obd.OBD(
        settings.port,
        baudrate=settings.baud or None,
        protocol=protocol_hint,
        fast=False,
        timeout=settings.timeout_s,
        check_voltage=True,
    )
    status = connection.status()
    interface = connection.interface
    if status == obd.OBDStatus.NOT_CONNECTED or interface is None:
        connection.close()
        raise DeviceUnavailableError(
            f"{settings.port}: adapter did not answer the ELM327 handshake"
        )
    # Name-mangled private attribute of python-obd 0.7.x's ELM327 class: the open pyserial port.
    port = getattr(interface, "_ELM327__port", None)
    if port is None:
        connection.close()
        raise DeviceUnavailableError("python-obd did not keep the serial port open")
    channel = ELM327Channel(port, settings.timeout_s)
    session = Session(connection=connection, channel=channel, adapter="")
    if status == obd.OBDStatus.CAR_CONNECTED:
        session.protocol_id = str(connection.protocol_id())
        session.protocol = str(connection.protocol_name())
    return session


def preflight(settings: OBDSettings) -> None:
    """Check that something answers like an ELM327 before python-obd's handshake.

    python-obd opens the port with a fixed 10 s read timeout and waits it out on every
    handshake command, so a hung adapter would hold the reader for tens of seconds.
    """
    import serial

    try:
        port = serial.serial_for_url(
            settings.port, baudrate=settings.baud or 38400, timeout=READ_SLICE_S
        )
    except (OSError, ValueError) as exc:
        raise DeviceUnavailableError(f"{settings.port}: cannot open ({exc})") from exc
    channel = ELM327Channel(port, settings.timeout_s)
    try:
        # A lone CR would repeat the adapter's last command; "ATI" is harmless.
        channel.request("ATI")
    except AdapterReplyError as exc:
        raise DeviceUnavailableError(f"{settings.port}: no ELM327 prompt ({exc})") from exc
    finally:
        channel.close()


def protocol_name(protocol_id: str) -> str:
    """python-obd's name for an ELM327 protocol number ("6" -> "ISO 15765-4 (CAN 11/500)")."""
    import_obd()
    from obd.elm327 import ELM327

    cls = ELM327._SUPPORTED_PROTOCOLS.get(protocol_id)
    return str(cls.ELM_NAME) if cls is not None else ""


class OBDReader:
    """A thread owning the ELM327: connects, probes, polls, reconnects, and emits samples."""

    RECONNECT_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 3.0)  # capped low: resume within 5 s of replug
    SILENCES_BEFORE_DOWN = 3
    NONSENSE_BEFORE_DOWN = 5  # unusable replies in a row (never NO DATA: that is the car)
    MAX_IDLE_S = 1.0  # real seconds the reader sleeps at most when nothing is due
    PROBE_RETRY_S = 5.0  # while the car does not answer (ignition off) and we think it is on
    # Spaces off: a third fewer bytes per reply at 38400 baud. Adaptive timing 2 shortens the
    # adapter's wait for more ECU frames after the last one (requests without a response-count
    # digit: the probe, trouble codes, and replies shorter than announced); ATST 32 (x 4 ms =
    # 200 ms) bounds NO DATA and that wait, whatever a clone's default is.
    TUNING: tuple[str, ...] = ("ATS0", "ATAT2", "ATST32")
    # Mode 01 polls on CAN carry the ELM327's response-count digit (see _poll).
    RESPONSE_COUNT = True

    def __init__(
        self,
        settings: OBDSettings,
        emit: Callable[[Sample], None],
        clock: Callable[[], float],
        *,
        clock_rate: float = 1.0,
    ) -> None:
        """``clock_rate``: how many ``clock`` seconds pass per real second (a simulated drive
        at x30 runs the clock 30 times faster), so the reader can sleep until the next task."""
        self.settings = settings
        self._emit = emit
        self._clock = clock
        self._clock_rate = clock_rate if clock_rate > 0 else 1.0
        self._builder = ReadingBuilder(settings)
        self._groups = poll_groups(settings)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ignition = True  # until told otherwise, ask the ECU: RPM is an ignition fallback
        self._reprobe = False
        self._session: Session | None = None
        self._protocol_hint: str | None = settings.protocol or None
        self._link: LinkState | None = None
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._silences = 0
        self._nonsense = 0
        self.last_progress = time.monotonic()

    # ---- public API ----

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="obd-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("OBD reader did not stop within %.1f s", timeout_s)

    def set_ignition(self, on: bool) -> None:
        if on and not self._ignition:
            self._reprobe = True  # supported PIDs can change with the ECU set awake
        self._ignition = on
        self._wake.set()

    def stats(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    # ---- thread ----

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[key] += n

    def _set_link(self, state: LinkState, reason: str) -> None:
        if state != self._link:
            self._link = state
            logger.info("OBD adapter %s: %s", state.value, reason)
            self._emit(LinkSample(self._clock(), Link.OBD, state, reason))

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self.last_progress = time.monotonic()
            try:
                if self._session is None:
                    if not self._try_open(attempt):
                        attempt += 1
                        continue
                    attempt = 0
                self._serve_once()
            except DeviceUnavailableError as exc:
                self._drop_session(f"adapter lost: {exc}")
            except AdapterReplyError as exc:
                self._count_error(exc)
            except Exception:
                # Supervision point: a bug here or in python-obd (whose handshake parses
                # whatever the adapter sends) must not kill the reader; start again, backing off.
                logger.exception("OBD reader failed; reconnecting")
                self._count("errors.internal")
                self._drop_session("internal error")
                self._stop.wait(self._backoff_s(attempt))
                attempt += 1
        if self._session is not None:
            self._close_session()

    def _backoff_s(self, attempt: int) -> float:
        return self.RECONNECT_BACKOFF_S[min(attempt, len(self.RECONNECT_BACKOFF_S) - 1)]

    def _try_open(self, attempt: int) -> bool:
        port = self.settings.port
        if "://" not in port and not os.path.exists(port):
            # Unplugged: watching for the device node is cheap, so look often and reconnect
            # as soon as it is back (no backoff while there is nothing to talk to).
            self._set_link(LinkState.DOWN, "adapter not present")
            self._stop.wait(0.25)
            return False
        try:
            self._session = open_session(self.settings, self._protocol_hint)
        except DeviceUnavailableError as exc:
            self._count("errors.connect")
            self._set_link(LinkState.DOWN, str(exc))
            self._stop.wait(self._backoff_s(attempt))
            return False
        self._silences = 0
        self._nonsense = 0
        self._count("reconnects" if self._link is not None else "connects")
        try:
            self._tune()
            self._set_link(LinkState.UP, "adapter answering")
            self._read_voltage()
            if self._ignition:
                self._probe()
        except AdapterReplyError as exc:
            self._count_error(exc)
        except DeviceUnavailableError as exc:
            self._drop_session(f"adapter lost during setup: {exc}")
            return False
        return True

    def _tune(self) -> None:
        session = self._require()
        session.adapter = self._at("ATI") or "unknown adapter"
        # Clones that do not know a command answer "?", which is counted and otherwise ignored.
        for command in self.TUNING:
            self._at(command)

    def _at(self, command: str) -> str:
        session = self._require()
        try:
            text = session.channel.request(command)
        except AdapterReplyError as exc:
            self._count_error(exc)
            return ""
        lines = [line for line in reply_lines(text) if line != command.upper()]
        if not lines or lines == ["?"]:
            self._count(f"errors.{ReplyErrorKind.UNKNOWN_COMMAND}")
            return ""
        if command == "ATI":
            # Keep the version string as printed ("ELM327 v1.5"), minus anything unprintable.
            last = text.strip().splitlines()[-1]
            return "".join(ch for ch in last if ch.isprintable()).strip()[:40]
        return " ".join(lines)

    def _require(self) -> Session:
        if self._session is None:
            raise DeviceUnavailableError("no adapter session")
        if self._nonsense >= self.NONSENSE_BEFORE_DOWN:
            # A counterfeit adapter with broken firmware (or a wrong baud rate) answers every
            # command with junk and a prompt: it is talking, but it is not a working link.
            self._nonsense = 0
            raise DeviceUnavailableError("adapter answers nonsense")
        return self._session

    def _drop_session(self, reason: str) -> None:
        self._close_session()
        self._set_link(LinkState.DOWN, reason)

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            # python-obd resets the adapter (ATZ) on close; on a vanished port its own error
            # handling then calls close() on None, hence the broad except.
            session.connection.close()
        except Exception:
            logger.debug("python-obd close failed", exc_info=True)
        session.channel.close()

    def _count_error(self, exc: AdapterReplyError) -> None:
        self._count(f"errors.{exc.kind.value}")
        if exc.kind in (ReplyErrorKind.GARBAGE, ReplyErrorKind.MISMATCH):
            self._count("garbage")
        if exc.kind in NONSENSE_KINDS:
            self._nonsense += 1
        logger.debug("OBD reply error: %s", exc)

    def _ecu(self, command: str) -> list[bytes]:
        """One ECU request; returns the messages' data. Counts and re-raises reply errors."""
        session = self._require()
        self._count("requests")
        try:
            messages = parse_reply(session.channel.request(command), command)
        except AdapterReplyError as exc:
            self._count_error(exc)
            if exc.kind == ReplyErrorKind.SILENCE:
                self._silences += 1
                if self._silences >= self.SILENCES_BEFORE_DOWN:
                    raise DeviceUnavailableError("adapter stopped answering") from exc
            raise
        self._silences = 0
        return [m.data for m in messages]

    def _query(self, command: str, decode: Callable[[bytes], _T]) -> list[_T]:
        """One ECU request, each message decoded; decoding failures are counted too."""
        out: list[_T] = []
        for data in self._ecu(command):
            try:
                out.append(decode(data))
            except AdapterReplyError as exc:
                self._count_error(exc)
                raise
        self._nonsense = 0
        return out

    def _probe(self) -> None:
        """Supported PIDs (bitmaps), protocol, VIN and multi-PID capability; emits VehicleInfo."""
        session = self._require()
        self._reprobe = False
        supported: set[int] = set()
        for base in BITMAP_PIDS:
            if base and base not in supported:
                break
            try:
                for values in self._query(f"01{base:02X}", decode_mode01):
                    if base in values:
                        supported |= decode_bitmap(base, values[base])
            except AdapterReplyError:
                break
        session.due["probe"] = self._clock() + self.PROBE_RETRY_S
        if not supported:
            logger.info("OBD: the car does not answer (ignition off?)")
            return
        session.supported = frozenset(supported)
        if not session.protocol_id:
            dpn = self._at("ATDPN")
            session.protocol_id = dpn[1:] if dpn.startswith("A") and len(dpn) > 1 else dpn
            session.protocol = protocol_name(session.protocol_id)
        self._protocol_hint = session.protocol_id or None
        # CAN frames need their headers to tell ECUs and ISO-TP frames apart; the older buses'
        # headers and checksums are of no use to us, so those run with headers off.
        self._at("ATH1" if session.protocol_id in CAN_PROTOCOLS else "ATH0")
        try:
            session.vin = self._query("0902", decode_vin)[0]
        except (AdapterReplyError, IndexError):
            session.vin = None
        session.multi = self._detect_multi(session)
        self._emit(
            VehicleInfo(
                ts_mono=self._clock(),
                adapter=session.adapter,
                protocol=session.protocol,
                vin=session.vin,
                supported_pids=tuple(f"{p:02X}" for p in sorted(supported)),
                multi_pid=session.multi,
            )
        )
        self._read_dtcs()
        now = self._clock()
        session.due = {g.name: now for g in self._groups}
        session.due["dtc"] = now + self.settings.dtc_interval_s
        session.due["voltage"] = now + self.settings.voltage_interval_s

    def _detect_multi(self, session: Session) -> bool:
        mode = self.settings.multi_pid
        if mode == "off":
            return False
        if mode == "on":
            return True
        # Multi-PID requests are an ISO 15765-4 (CAN, protocols 6-9) feature.
        if session.protocol_id not in CAN_PROTOCOLS:
            return False
        pair = [p for p in (0x0D, 0x0C, 0x05, 0x04) if p in session.supported][:2]
        if len(pair) < 2:
            return False
        try:
            got: set[int] = set()
            for values in self._query(mode01_requests(pair, True)[0], decode_mode01):
                got |= set(values)
        except AdapterReplyError:
            return False
        if not set(pair) <= got:
            logger.info(
                "OBD adapter %r answers only part of multi-PID requests; one PID each",
                session.adapter,
            )
            return False
        return True

    def _read_dtcs(self) -> None:
        try:
            stored = self._dtcs("03")
        except AdapterReplyError:
            return
        try:
            pending = self._dtcs("07")
        except AdapterReplyError:
            pending = ()
        self._emit(DTCSample(self._clock(), stored, pending))

    def _dtcs(self, service: str) -> tuple[str, ...]:
        codes: list[str] = []
        mode = int(service, 16)
        for found in self._query(service, lambda data: decode_dtcs(data, mode)):
            codes += found
        return tuple(dict.fromkeys(codes))

    def _read_voltage(self) -> None:
        session = self._require()
        try:
            volts = parse_voltage(session.channel.request("ATRV"))
        except AdapterReplyError as exc:
            self._count_error(exc)
            if exc.kind == ReplyErrorKind.SILENCE:
                raise DeviceUnavailableError("adapter did not answer ATRV") from exc
            return
        self._nonsense = 0
        session.last_voltage_v = volts
        session.low_voltage = volts < self.settings.low_voltage_v
        self._count("readings")
        self._emit(OBDReading(self._clock(), voltage_v=volts))
        session.due["voltage"] = self._clock() + self.settings.voltage_interval_s

    def _serve_once(self) -> None:
        session = self._require()
        now = self._clock()
        if now >= session.due.get("voltage", 0.0):
            self._read_voltage()
            return
        querying = self._ignition and not session.low_voltage
        probe_due = not session.supported and now >= session.due.get("probe", 0.0)
        if querying and (self._reprobe or probe_due):
            self._reprobe = False
            self._probe()
            return
        if querying and session.supported:
            # The most overdue task goes first, so a fast group cannot starve the others (or
            # the trouble codes) when the adapter is slower than the plan asks for.
            tasks = [(session.due.get(g.name, 0.0), i) for i, g in enumerate(self._groups)]
            tasks.append((session.due.get("dtc", now + self.settings.dtc_interval_s), -1))
            due, index = min(tasks)
            if now >= due and index < 0:
                session.due["dtc"] = now + self.settings.dtc_interval_s
                self._read_dtcs()
                return
            if now >= due:
                group = self._groups[index]
                session.due[group.name] = max(now, due + group.interval_s)
                self._poll(session, group)
                return
        # Sleep until the next task is due (ignition changes and stop() wake it early): every
        # wake-up costs CPU, so no fixed polling tick. At most a second, to report progress.
        waits = [t for k, t in session.due.items() if querying or k == "voltage"]
        delay = (min(waits) - now) / self._clock_rate if waits else self.MAX_IDLE_S
        self._wake.wait(max(0.0, min(delay, self.MAX_IDLE_S)))
        self._wake.clear()

    def _check_multi(self, session: Session, asked: int, answered: int) -> None:
        """Fall back to one PID per request when multi-PID replies keep coming back short.

        Some clones pass the probe and later truncate longer requests (or do so only once
        the bus is busy); three short replies in a row end multi-PID for this session.
        """
        if answered >= asked:
            session.short_replies = 0
            return
        session.short_replies += 1
        if session.short_replies >= 3 and self.settings.multi_pid == "auto":
            session.multi = False
            self._count("multi_pid_fallbacks")
            logger.warning(
                "OBD adapter %r truncates multi-PID replies; one PID per request from now on",
                session.adapter,
            )

    def _poll(self, session: Session, group: PollGroup) -> None:
        pids = [p for p in group.pids if p in session.supported]
        raw: dict[int, bytes] = {}
        for command in mode01_requests(pids, session.multi):
            if self.RESPONSE_COUNT and session.protocol_id in CAN_PROTOCOLS:
                # A trailing digit tells the ELM327 (v1.3+) how many frames to wait for, so it
                # answers as soon as they are in instead of waiting out its timeout for other
                # ECUs that might answer too (python-obd's "fast" mode does the same).
                command += f"{can_frames(bytes.fromhex(command[2:])):X}"
            try:
                got: dict[int, bytes] = {}
                for values in self._query(command, decode_mode01):
                    got.update(values)
            except AdapterReplyError:
                continue
            raw.update(got)
            if session.multi:
                self._check_multi(session, len(command) // 2 - 1, len(got))
        reading = self._builder.build(self._clock(), raw, session.supported)
        if reading is not None:
            self._count("readings")
            self._count("values", len(raw))
            self._emit(reading)


class OBDReplayDecoder:
    """Turns recorded request/reply pairs into the samples the live reader would have emitted."""

    def __init__(self, settings: OBDSettings) -> None:
        self.settings = settings
        self._builder = ReadingBuilder(settings)
        self._supported: set[int] = set()
        self._stored: tuple[str, ...] | None = None
        self._adapter = ""
        self._protocol = ""
        self._multi = False
        self.errors: Counter[str] = Counter()

    def feed(self, t: float, request: str, reply: str) -> list[Sample]:
        command = "".join(request.split()).upper()
        try:
            return self._decode(t, command, reply)
        except AdapterReplyError as exc:
            self.errors[exc.kind.value] += 1
            return []

    def _decode(self, t: float, command: str, reply: str) -> list[Sample]:
        if command == "ATRV":
            return [OBDReading(t, voltage_v=parse_voltage(reply))]
        if command in ("ATI", "ATZ"):
            lines = [ln for ln in reply.replace("\r", "\n").split("\n") if ln.strip()]
            self._adapter = lines[-1].strip() if lines else ""
            return []
        if command == "ATDPN":
            dpn = "".join(reply_lines(reply))
            self._protocol = protocol_name(dpn[1:] if dpn.startswith("A") else dpn)
            return []
        if command.startswith("AT"):
            return []
        if command == "0902":
            try:
                vin: str | None = decode_vin(parse_reply(reply, command)[0].data)
            except AdapterReplyError as exc:
                self.errors[exc.kind.value] += 1
                vin = None
            return [self._info(t, vin)] if self._supported else []
        messages = parse_reply(reply, command)
        if command in ("03", "07"):
            codes: list[str] = []
            for m in messages:
                codes += decode_dtcs(m.data, int(command, 16))
            if command == "03":
                self._stored = tuple(dict.fromkeys(codes))
                return []
            stored, self._stored = self._stored, None
            if stored is None:
                return []
            return [DTCSample(t, stored, tuple(dict.fromkeys(codes)))]
        if command.startswith("01") and len(command) >= 4:
            raw: dict[int, bytes] = {}
            for m in messages:
                raw.update(decode_mode01(m.data))
            if command == "0100":
                self._supported = set()
            bitmaps = {p: v for p, v in raw.items() if p in BITMAP_PIDS}
            for base, value in bitmaps.items():
                self._supported |= decode_bitmap(base, value)
            if bitmaps:
                return []
            if len(raw) > 1:
                self._multi = True
            reading = self._builder.build(t, raw, self._supported)
            return [reading] if reading is not None else []
        raise AdapterReplyError(ReplyErrorKind.MISMATCH, f"request {command[:12]!r} not decoded")

    def _info(self, t: float, vin: str | None) -> VehicleInfo:
        return VehicleInfo(
            ts_mono=t,
            adapter=self._adapter,
            protocol=self._protocol,
            vin=vin,
            supported_pids=tuple(f"{p:02X}" for p in sorted(self._supported)),
            multi_pid=self._multi,
        )

    def link(self, t: float, event: str) -> list[Sample]:
        if event == "unplug":
            return [LinkSample(t, Link.OBD, LinkState.DOWN, "adapter unplugged")]
        if event == "replug":
            return [LinkSample(t, Link.OBD, LinkState.UP, "adapter answering")]
        self.errors["unknown_link_event"] += 1
        return []
