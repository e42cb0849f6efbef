# noqa: N999 - named as the library it stands in for
"""RPi.GPIO (fake): the module API of RPi.GPIO 0.7 on a simulated BCM283x pin bank.

Semantics follow RPi.GPIO's C sources (``source/py_gpio.c``, ``common.c``, ``constants.c``):
``setmode`` is mandatory before any channel call and cannot change once set; ``setup`` of an
output writes ``initial`` to the output latch *before* switching the pin to output (without it
the pin drives whatever the latch holds: a previous program's level); inputs get the requested
pull, ``PUD_OFF`` by default; ``input`` needs a set-up channel; ``output`` needs an output;
``cleanup`` turns the given set-up channels back into inputs without pull.

Like the real module, its state is process-wide. ``fake_board`` is the test's side: the
external circuit (:meth:`Board.drive`) and what each pin really does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

# constants.c / c_gpio.h (Python values: pulls are offset by 20, as PY_PUD_CONST_OFFSET)
HIGH = 1
LOW = 0
OUT = 0
IN = 1
BOARD = 10
BCM = 11
PUD_OFF = 20
PUD_DOWN = 21
PUD_UP = 22
VERSION = "0.7.1"

GPIO_COUNT = 54
# 40-pin header: physical pin -> BCM GPIO (pin_to_gpio_rev3 in common.c).
BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}  # fmt: skip


@dataclass
class Pin:
    """One BCM GPIO: function, pull and output latch as the SoC holds them."""

    function: int = IN
    pull: int = PUD_OFF
    latch: int = LOW
    external: int | None = None  # what the circuit outside drives; None: nothing
    floating_reads: int = 0
    history: list[int] = field(default_factory=list)  # physical level after every change


class Board:
    """The SoC's pin bank plus the wiring outside it."""

    def __init__(self) -> None:
        # Reset state: inputs, pull-up on GPIO 0-8, pull-down above (BCM2835 datasheet).
        self.pins = {
            gpio: Pin(pull=PUD_UP if gpio <= 8 else PUD_DOWN) for gpio in range(GPIO_COUNT)
        }
        for gpio in self.pins:
            self.pins[gpio].history.append(self.level(gpio))

    def drive(self, gpio: int, level: int | None) -> None:
        """The external circuit drives the pin high (1), low (0), or lets go (None)."""
        self.pins[gpio].external = level
        self._record(gpio)

    def level(self, gpio: int) -> int:
        """The physical level on the pin now."""
        pin = self.pins[gpio]
        if pin.function == OUT:
            return pin.latch
        if pin.external is not None:
            return pin.external
        if pin.pull == PUD_UP:
            return HIGH
        if pin.pull == PUD_DOWN:
            return LOW
        # A floating CMOS input picks up whatever is near: it reads noise.
        pin.floating_reads += 1
        return pin.floating_reads % 2

    def _record(self, gpio: int) -> None:
        pin = self.pins[gpio]
        if pin.function == OUT or pin.external is not None or pin.pull != PUD_OFF:
            level = self.level(gpio)
            if pin.history[-1] != level:
                pin.history.append(level)

    def set_function(self, gpio: int, function: int, pull: int) -> None:
        pin = self.pins[gpio]
        pin.function, pin.pull = function, pull
        self._record(gpio)

    def set_latch(self, gpio: int, level: int) -> None:
        self.pins[gpio].latch = level
        self._record(gpio)


class _Process:
    """The module's C globals: numbering mode, warnings, channels this process set up."""

    def __init__(self) -> None:
        self.mode: int | None = None
        self.warnings = True
        self.directions: dict[int, int] = {}  # gpio -> IN/OUT, as gpio_direction[] in C


fake_board = Board()
_process = _Process()


def _gpio(channel: int) -> int:
    """get_gpio_number() in common.c."""
    if _process.mode not in (BOARD, BCM):
        raise RuntimeError(
            "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
        )
    if _process.mode == BCM:
        if not 0 <= channel < GPIO_COUNT:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel
    if channel not in BOARD_TO_BCM:
        raise ValueError("The channel sent is invalid on a Raspberry Pi")
    return BOARD_TO_BCM[channel]


def _channels(channel: int | Iterable[int]) -> list[int]:
    if isinstance(channel, int):
        return [channel]
    if isinstance(channel, list | tuple):
        if not all(isinstance(c, int) for c in channel):
            raise ValueError("Channel must be an integer")
        return list(channel)
    raise ValueError("Channel must be an integer or list/tuple of integers")


def setwarnings(flag: bool) -> None:
    _process.warnings = bool(flag)


def setmode(mode: int) -> None:
    if mode not in (BOARD, BCM):
        raise ValueError("An invalid mode was passed to setmode()")
    if _process.mode is not None and mode != _process.mode:
        raise ValueError("A different mode has already been set!")
    _process.mode = mode


def getmode() -> int | None:
    return _process.mode


def setup(
    channel: int | Iterable[int],
    direction: int,
    pull_up_down: int = PUD_OFF,
    initial: int = -1,
) -> None:
    channels = _channels(channel)
    if direction not in (IN, OUT):
        raise ValueError("An invalid direction was passed to setup()")
    if direction == OUT and pull_up_down != PUD_OFF:
        raise ValueError("pull_up_down parameter is not valid for outputs")
    if direction == IN and initial != -1:
        raise ValueError("initial parameter is not valid for inputs")
    if pull_up_down not in (PUD_OFF, PUD_DOWN, PUD_UP):
        raise ValueError(
            "Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN"
        )
    for ch in channels:
        gpio = _gpio(ch)
        pin = fake_board.pins[gpio]
        if _process.warnings and pin.function == OUT and gpio not in _process.directions:
            warnings.warn(
                "This channel is already in use, continuing anyway.  Use GPIO.setwarnings(False)"
                " to disable warnings.",
                RuntimeWarning,
                stacklevel=2,
            )
        if direction == OUT and initial in (LOW, HIGH):
            fake_board.set_latch(gpio, initial)
        fake_board.set_function(gpio, direction, pull_up_down if direction == IN else PUD_OFF)
        _process.directions[gpio] = direction


def output(channel: int, value: int | bool) -> None:
    gpio = _gpio(channel)
    if _process.directions.get(gpio) != OUT:
        raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
    fake_board.set_latch(gpio, HIGH if value else LOW)


def input(channel: int) -> int:  # noqa: A001 - RPi.GPIO's own name
    gpio = _gpio(channel)
    if gpio not in _process.directions:
        raise RuntimeError("You must setup() the GPIO channel first")
    return fake_board.level(gpio)


def cleanup(channel: int | Iterable[int] | None = None) -> None:
    gpios = list(_process.directions) if channel is None else [_gpio(c) for c in _channels(channel)]
    found = False
    for gpio in gpios:
        if gpio in _process.directions:
            fake_board.set_function(gpio, IN, PUD_OFF)
            del _process.directions[gpio]
            found = True
    if not found and _process.warnings:
        warnings.warn(
            "No channels have been set up yet - nothing to clean up!  Try cleaning up at the end"
            " of your program instead!",
            RuntimeWarning,
            stacklevel=2,
        )
