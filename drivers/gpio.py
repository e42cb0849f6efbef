"""GPIO: ignition input, power-hold and status LED outputs over RPi.GPIO, libgpiod or a file.

Backends share one small seam (:class:`GPIOBackend`): read an input level, drive an output.
``rpigpio`` is RPi.GPIO (Pi 1-4), ``gpiod`` the libgpiod v2 bindings (the Pi 5, where RPi.GPIO
cannot reach the RP1 I/O chip), ``simulated`` reads the simulator's ignition line file (``0`` or
``1``, replaced atomically) and writes outputs as ``gpio<N>.out`` files beside it, so tests and
the simulator observe power-hold and the LED exactly as a wired bench would.

:class:`IgnitionReader` is the one thread that owns the backend: it polls the ignition input,
debounces it (:class:`drivers.ignition.IgnitionDebouncer`), emits :class:`IgnitionSample`, and
drives the outputs the daemon asks for.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from drivers.errors import DeviceUnavailableError, DriverError
from drivers.ignition import IgnitionDebouncer
from drivers.samples import IgnitionSample, Sample

logger = logging.getLogger(__name__)


class GPIOLibraryError(DriverError, ImportError):
    """The configured GPIO backend's library is not installed."""


class GPIOBackend(Protocol):
    def read(self, pin: int) -> int:
        """The physical level of an input pin, 0 or 1."""
        ...

    def write(self, pin: int, level: bool) -> None: ...

    def close(self, keep: tuple[int, ...] = ()) -> None:
        """Hand the pins back, except the outputs in ``keep``, which stay driven as they are
        until the process exits (the power-hold line during a shutdown)."""
        ...


class SimulatedGPIO:
    """Pins as files: the input is the simulator's line file, outputs are ``gpio<N>.out``."""

    def __init__(self, line_file: str | Path) -> None:
        if not str(line_file):
            raise DeviceUnavailableError("simulated GPIO needs ignition.line_file")
        self.line_file = Path(line_file)
        self.outputs: dict[int, bool] = {}

    def output_path(self, pin: int) -> Path:
        return self.line_file.with_name(f"gpio{pin}.out")

    def read(self, pin: int) -> int:
        try:
            text = self.line_file.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise DeviceUnavailableError(
                f"{self.line_file}: ignition line file is missing"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DeviceUnavailableError(
                f"{self.line_file}: cannot read the line ({exc})"
            ) from None
        if text not in ("0", "1"):
            raise DeviceUnavailableError(
                f"{self.line_file}: line value must be 0 or 1, got {text[:8]!r}"
            )
        return int(text)

    def write(self, pin: int, level: bool) -> None:
        if self.outputs.get(pin) == level:
            return
        path = self.output_path(pin)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("1\n" if level else "0\n", encoding="ascii")
        os.replace(tmp, path)
        self.outputs[pin] = level

    def close(self, keep: tuple[int, ...] = ()) -> None:
        # The output files stay as last written, as a real line keeps its level.
        self.outputs = {pin: level for pin, level in self.outputs.items() if pin in keep}


class RPiGPIO:
    """RPi.GPIO with BCM numbering (Raspberry Pi 1-4)."""

    def __init__(
        self, inputs: tuple[int, ...], outputs: tuple[int, ...], high: tuple[int, ...] = ()
    ) -> None:
        try:
            rpi_gpio = importlib.import_module("RPi.GPIO")
        except ImportError:
            raise GPIOLibraryError(
                "ignition.backend = 'rpigpio' needs RPi.GPIO: install python3-rpi.gpio"
                " (apt) or RPi.GPIO (pip); on a Pi 5 use backend 'gpiod'"
            ) from None
        except RuntimeError as exc:
            # RPi.GPIO raises RuntimeError at import on a board it does not recognise (Pi 5).
            raise DeviceUnavailableError(f"RPi.GPIO cannot run here ({exc}); use 'gpiod'") from None
        self._gpio: Any = rpi_gpio
        self._gpio.setwarnings(False)
        self._gpio.setmode(self._gpio.BCM)
        for pin in inputs:
            # No internal pull: the ignition sense circuit (opto-coupler and its 10 kOhm
            # resistor, docs/technician-guide.md) drives the line. A missing resistor then
            # shows as a flapping line instead of being hidden by the SoC's default pull.
            self._gpio.setup(pin, self._gpio.IN, pull_up_down=self._gpio.PUD_OFF)
        for pin in outputs:
            level = self._gpio.HIGH if pin in high else self._gpio.LOW
            self._gpio.setup(pin, self._gpio.OUT, initial=level)
        self._pins = inputs + outputs

    def read(self, pin: int) -> int:
        return 1 if self._gpio.input(pin) else 0

    def write(self, pin: int, level: bool) -> None:
        self._gpio.output(pin, self._gpio.HIGH if level else self._gpio.LOW)

    def close(self, keep: tuple[int, ...] = ()) -> None:
        # cleanup() turns a pin back into an input: for the power-hold line that would cut our
        # own power in the middle of the shutdown, so a kept pin is left to the process exit.
        pins = [pin for pin in self._pins if pin not in keep]
        if pins:
            self._gpio.cleanup(pins)


class GpiodGPIO:
    """libgpiod v2 bindings (``gpiod``): one line request holding every pin we use."""

    def __init__(
        self,
        chip: str,
        inputs: tuple[int, ...],
        outputs: tuple[int, ...],
        high: tuple[int, ...] = (),
    ) -> None:
        try:
            import gpiod
            from gpiod.line import Bias, Direction, Value
        except ImportError:
            raise GPIOLibraryError(
                "ignition.backend = 'gpiod' needs the libgpiod v2 Python bindings:"
                " pip install gpiod (>= 2.1)"
            ) from None
        self._value = Value
        config: dict[Any, Any] = {}
        if inputs:
            # Bias.DISABLED, as RPi.GPIO's PUD_OFF: the default AS_IS would keep the pin's reset
            # pull (pull-down on most Pi GPIOs) and hide a missing external resistor.
            config[inputs] = gpiod.LineSettings(direction=Direction.INPUT, bias=Bias.DISABLED)
        for value, lines in (
            (Value.ACTIVE, tuple(p for p in outputs if p in high)),
            (Value.INACTIVE, tuple(p for p in outputs if p not in high)),
        ):
            if lines:
                config[lines] = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=value)
        try:
            self._request: Any = gpiod.request_lines(
                chip, config=config, consumer="telematics-agent"
            )
        except (OSError, ValueError) as exc:
            raise DeviceUnavailableError(f"{chip}: cannot request GPIO lines ({exc})") from None

    def read(self, pin: int) -> int:
        return 1 if self._request.get_value(pin) == self._value.ACTIVE else 0

    def write(self, pin: int, level: bool) -> None:
        self._request.set_value(pin, self._value.ACTIVE if level else self._value.INACTIVE)

    def close(self, keep: tuple[int, ...] = ()) -> None:
        # One request holds every line and cannot give back only some, so with a line to keep
        # the request stays open; the kernel releases it when the process exits.
        if not keep:
            self._request.release()


class LEDPattern(StrEnum):
    """What the status LED says; each a 2 s cycle a technician can tell apart at a glance."""

    OFF = "off"  # agent not running
    NO_FIX = "no_fix"  # slow blink: 1 s on, 1 s off
    NO_BROKER = "no_broker"  # double flash: two short blinks, then a pause
    ALL_GOOD = "all_good"  # steady on


# (on_s, off_s) steps of one 2 s cycle.
_PATTERNS: dict[LEDPattern, tuple[tuple[float, float], ...]] = {
    LEDPattern.OFF: ((0.0, 2.0),),
    LEDPattern.NO_FIX: ((1.0, 1.0),),
    LEDPattern.NO_BROKER: ((0.15, 0.15), (0.15, 1.55)),
    LEDPattern.ALL_GOOD: ((2.0, 0.0),),
}


def led_next_change_s(pattern: LEDPattern, t_s: float) -> float | None:
    """Seconds from ``t_s`` until the LED level next changes; None for a steady pattern."""
    steps = _PATTERNS[pattern]
    edges: list[float] = []
    at = 0.0
    for on, off in steps:
        if on > 0.0 and off > 0.0:
            edges += [at, at + on]
        at += on + off
    if not edges:
        return None
    cycle = at
    t = t_s % cycle
    later = [e for e in edges if e > t]
    return (later[0] if later else cycle + edges[0]) - t


def led_level(pattern: LEDPattern, t_s: float) -> bool:
    """The LED level at time ``t_s`` of a pattern (a pure function, for tests and the thread)."""
    steps = _PATTERNS[pattern]
    cycle = sum(on + off for on, off in steps)
    t = t_s % cycle
    for on, off in steps:
        if t < on:
            return True
        t -= on
        if t < off:
            return False
        t -= off
    return False


class PowerHold:
    """Keeps the Pi powered after ignition off until the spool is flushed, then a grace delay.

    Bounded by ``max_s`` after ignition off (0 = unbounded): a van parked out of coverage must
    not drain its battery waiting for a broker. Releasing loses nothing, since the spool is on
    disk and drains at the next drive. Pure decision logic (no I/O): ``update`` says whether
    the hold output should be asserted.
    """

    def __init__(self, release_s: float, max_s: float = 0.0) -> None:
        self.release_s = release_s
        self.max_s = max_s
        self._flushed_since: float | None = None
        self._off_since: float | None = None
        self.released = False

    def update(self, now_s: float, ignition_on: bool | None, spool_flushed: bool) -> bool:
        if ignition_on is None or ignition_on:
            self._flushed_since = None
            self._off_since = None
            self.released = False
            return True
        if self._off_since is None:
            self._off_since = now_s
        if self.released:
            return False
        if self.max_s > 0 and now_s - self._off_since >= self.max_s:
            logger.warning(
                "spool not drained %.0f s after ignition off: releasing power-hold; the"
                " spool keeps its entries for the next drive",
                now_s - self._off_since,
            )
            self.released = True
            return False
        if not spool_flushed:
            self._flushed_since = None
            return True
        if self._flushed_since is None:
            self._flushed_since = now_s
        if now_s - self._flushed_since >= self.release_s:
            logger.info("spool flushed after ignition off: releasing power-hold")
            self.released = True
        return not self.released


@dataclass(frozen=True, slots=True)
class GPIOSettings:
    """Mirrors ``agent.config.IgnitionSection`` (drivers do not import the agent)."""

    backend: str = "simulated"  # "simulated" | "rpigpio" | "gpiod"
    pin: int = 17
    chip: str = "/dev/gpiochip0"
    line_file: str = ""
    active_low: bool = False
    debounce_s: float = 2.0
    power_hold_pin: int = -1
    led_pin: int = -1
    # Longest polling period. The line is read four times per debounce period (at least every
    # 0.05 s), so the default 2 s debounce means 4 reads a second: each thread wake-up costs CPU.
    poll_s: float = 0.25

    @property
    def poll_period_s(self) -> float:
        return min(self.poll_s, max(0.05, self.debounce_s / 4.0))


def open_backend(settings: GPIOSettings) -> GPIOBackend:
    """The configured backend; GPIOLibraryError names the package to install."""
    outputs = tuple(p for p in (settings.power_hold_pin, settings.led_pin) if p >= 0)
    # Power-hold starts high: the agent holds power from its first moment (IgnitionReader's
    # power_hold starts True). Set up low and raised later, a restart while parked would drop
    # the hold for a few milliseconds, which a latching power circuit may take as "release".
    high = (settings.power_hold_pin,) if settings.power_hold_pin >= 0 else ()
    if settings.backend == "simulated":
        return SimulatedGPIO(settings.line_file)
    if settings.backend == "rpigpio":
        return RPiGPIO((settings.pin,), outputs, high)
    if settings.backend == "gpiod":
        return GpiodGPIO(settings.chip, (settings.pin,), outputs, high)
    raise ValueError(f"unknown GPIO backend {settings.backend!r}")


class IgnitionReader:
    """The thread owning the GPIO backend: ignition in, power-hold and LED out.

    Other threads set :attr:`power_hold` and :attr:`led_pattern`; this thread applies them, so
    the GPIO library is only ever called from here.
    """

    def __init__(
        self,
        settings: GPIOSettings,
        emit: Callable[[Sample], None],
        clock: Callable[[], float],
        *,
        backend: GPIOBackend | None = None,
    ) -> None:
        self.settings = settings
        self._emit = emit
        self._clock = clock
        # Open now so a missing library or chip fails the daemon's start with a clear error.
        self._backend = backend or open_backend(settings)
        self._debouncer = IgnitionDebouncer(settings.debounce_s, settings.active_low)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.power_hold = True
        self.led_pattern = LEDPattern.NO_FIX
        self.read_errors = 0
        self._last_error = ""
        self.last_progress = time.monotonic()

    @property
    def ignition_on(self) -> bool | None:
        return self._debouncer.state

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpio", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._drive(self.settings.led_pin, False)
        # Power-hold stays as last decided: releasing it here would cut our own power before
        # the rest of the shutdown (pipeline commit, publisher drain) has run; the line is
        # let go when the process is gone.
        pin = self.settings.power_hold_pin
        self._backend.close(keep=(pin,) if pin >= 0 and self.power_hold else ())

    def _run(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            self.last_progress = time.monotonic()
            now = self._clock()
            samples = self._poll(now)
            for sample in samples:
                logger.info("ignition %s", "on" if sample.on else "off")
                self._emit(sample)
            self._drive(s.power_hold_pin, self.power_hold)
            wait_s = s.poll_period_s
            if s.led_pin >= 0:
                t = time.monotonic()
                self._drive(s.led_pin, led_level(self.led_pattern, t))
                change = led_next_change_s(self.led_pattern, t)
                if change is not None:
                    wait_s = min(wait_s, change + 0.001)
            self._stop.wait(wait_s)

    def _poll(self, now: float) -> list[IgnitionSample]:
        try:
            level = self._backend.read(self.settings.pin)
        except DeviceUnavailableError as exc:
            # Counted and logged once per distinct reason; the debounced state holds meanwhile.
            self.read_errors += 1
            if str(exc) != self._last_error:
                logger.warning("ignition line unreadable: %s", exc)
                self._last_error = str(exc)
            return []
        if self._last_error:
            logger.info("ignition line readable again")
            self._last_error = ""
        return self._debouncer.feed(level, now)

    def _drive(self, pin: int, level: bool) -> None:
        if pin < 0:
            return
        try:
            self._backend.write(pin, level)
        except (OSError, DriverError) as exc:
            self.read_errors += 1
            logger.debug("GPIO %d write failed: %s", pin, exc)
