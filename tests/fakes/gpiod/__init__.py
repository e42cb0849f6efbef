"""gpiod (fake): libgpiod v2's Python bindings (gpiod >= 2.1) over simulated GPIO chips.

The part of the API the agent uses, with the bindings' semantics: ``request_lines(path, config,
consumer, ...)`` takes a mapping of offsets (or tuples of offsets) to :class:`LineSettings`
(``None``: defaults), refuses an offset configured twice (ValueError), a missing chip
(FileNotFoundError), an offset beyond the chip (EINVAL) or a line someone else holds (EBUSY);
values are *logical* (``Value.ACTIVE`` is low on an active-low line); setting an input is EPERM;
``Bias.AS_IS`` keeps whatever pull the line had; a released request raises
:class:`RequestReleasedError` and frees its lines for the next requester.

``fake_install_chip`` is the test's side: it plugs a chip in at a path and returns it, to drive
lines from outside and read what they really do.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType

from . import line
from .line import Bias, Clock, Direction, Drive, Edge, Value

__version__ = "2.1.3"
api_version = "2.1"


class ChipClosedError(Exception):
    def __init__(self) -> None:
        super().__init__("I/O operation on closed chip")


class RequestReleasedError(Exception):
    def __init__(self) -> None:
        super().__init__("GPIO lines have been released")


@dataclass(repr=False)
class LineSettings:
    direction: Direction = Direction.AS_IS
    edge_detection: Edge = Edge.NONE
    bias: Bias = Bias.AS_IS
    drive: Drive = Drive.PUSH_PULL
    active_low: bool = False
    debounce_period: timedelta = timedelta()
    event_clock: Clock = Clock.MONOTONIC
    output_value: Value = Value.INACTIVE


@dataclass
class FakeLine:
    """One line of a simulated chip: what the hardware does and who holds it."""

    bias: Bias
    direction: Direction = Direction.INPUT
    driven: int = 0  # the physical level an output drives
    external: int | None = None  # what the circuit outside drives; None: nothing
    consumer: str | None = None
    active_low: bool = False
    floating_reads: int = 0
    history: list[int] = field(default_factory=list)  # physical level after every change


class FakeChip:
    """A GPIO chip device: its lines, and the wiring outside it (the test's handle)."""

    def __init__(self, path: str, num_lines: int, default_bias: dict[int, Bias]) -> None:
        self.path = path
        self.lines = [FakeLine(default_bias.get(i, Bias.PULL_DOWN)) for i in range(num_lines)]
        for i in range(num_lines):
            self.lines[i].history.append(self.level(i))

    def drive(self, offset: int, level: int | None) -> None:
        """The external circuit drives the line high (1), low (0), or lets go (None)."""
        self.lines[offset].external = level
        self._record(offset)

    def level(self, offset: int) -> int:
        """The physical level on the line now."""
        ln = self.lines[offset]
        if ln.direction == Direction.OUTPUT:
            return ln.driven
        if ln.external is not None:
            return ln.external
        if ln.bias == Bias.PULL_UP:
            return 1
        if ln.bias == Bias.PULL_DOWN:
            return 0
        ln.floating_reads += 1  # no pull, nothing driving: the input reads noise
        return ln.floating_reads % 2

    def _record(self, offset: int) -> None:
        ln = self.lines[offset]
        if ln.direction == Direction.OUTPUT or ln.external is not None or ln.bias in (
            Bias.PULL_UP,
            Bias.PULL_DOWN,
        ):
            level = self.level(offset)
            if ln.history[-1] != level:
                ln.history.append(level)

    def _configure(self, offset: int, settings: LineSettings, value: Value | None) -> None:
        ln = self.lines[offset]
        ln.active_low = settings.active_low
        if settings.bias != Bias.AS_IS:
            ln.bias = settings.bias
        if settings.direction == Direction.OUTPUT:
            logical = settings.output_value if value is None else value
            ln.driven = int(bool(logical)) ^ int(ln.active_low)
        if settings.direction != Direction.AS_IS:
            ln.direction = settings.direction
        self._record(offset)


# Plugged-in chips by path: the simulated /dev (process-wide, like the devices it stands for).
_chips: dict[str, FakeChip] = {}

# Raspberry Pi reset pulls: GPIO 0-8 pull up, the others pull down.
PI_DEFAULT_BIAS = {i: Bias.PULL_UP if i <= 8 else Bias.PULL_DOWN for i in range(54)}


def fake_install_chip(path: str, num_lines: int = 54) -> FakeChip:
    """Plug a simulated chip in at ``path`` (default: a Raspberry Pi's 54 lines)."""
    chip = FakeChip(path, num_lines, PI_DEFAULT_BIAS)
    _chips[path] = chip
    return chip


def _config_iter(
    config: dict[Iterable[int | str] | int | str, LineSettings | None],
) -> Iterator[tuple[int | str, LineSettings | None]]:
    for key, settings in config.items():
        if isinstance(key, int | str):
            yield key, settings
        else:
            for subkey in key:
                yield subkey, settings


class LineRequest:
    """Lines held by one requester; released explicitly or by leaving a ``with`` block."""

    def __init__(self, chip: FakeChip, offsets: list[int]) -> None:
        self._chip: FakeChip | None = chip
        self._offsets = offsets

    def __bool__(self) -> bool:
        return self._chip is not None

    def __enter__(self) -> LineRequest:
        self._live()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _live(self) -> FakeChip:
        if self._chip is None:
            raise RequestReleasedError()
        return self._chip

    def _offset(self, ln: int | str) -> int:
        if not isinstance(ln, int):
            raise ValueError(f"unknown line name: {ln}")
        if ln not in self._offsets:
            # libgpiod refuses a subset with offsets outside the request.
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return ln

    @property
    def offsets(self) -> list[int]:
        self._live()
        return list(self._offsets)

    @property
    def num_lines(self) -> int:
        return len(self.offsets)

    @property
    def chip_name(self) -> str:
        return os.path.basename(self._live().path)

    def release(self) -> None:
        if self._chip is not None:
            for offset in self._offsets:
                self._chip.lines[offset].consumer = None
            self._chip = None

    def get_value(self, ln: int | str) -> Value:
        return self.get_values([ln])[0]

    def get_values(self, lines: Iterable[int | str] | None = None) -> list[Value]:
        chip = self._live()
        out = []
        for offset in [self._offset(ln) for ln in (lines or self._offsets)]:
            physical = chip.level(offset)
            out.append(Value.ACTIVE if physical ^ chip.lines[offset].active_low else Value.INACTIVE)
        return out

    def set_value(self, ln: int | str, value: Value) -> None:
        self.set_values({ln: value})

    def set_values(self, values: dict[int | str, Value]) -> None:
        chip = self._live()
        for ln, value in values.items():
            offset = self._offset(ln)
            if not isinstance(value, Value):
                raise TypeError("value must be a gpiod.line.Value")
            state = chip.lines[offset]
            if state.direction != Direction.OUTPUT:
                # The kernel refuses to set a line requested as input.
                raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
            state.driven = int(bool(value)) ^ int(state.active_low)
            chip._record(offset)


def is_gpiochip_device(path: str) -> bool:
    return path in _chips


def request_lines(
    path: str,
    config: dict[Iterable[int | str] | int | str, LineSettings | None],
    consumer: str | None = None,
    event_buffer_size: int | None = None,
    output_values: dict[int | str, Value] | None = None,
) -> LineRequest:
    chip = _chips.get(path)
    if chip is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    seen: dict[int, LineSettings] = {}
    for ln, settings in _config_iter(config):
        if not isinstance(ln, int):
            raise OSError(errno.ENOENT, f"line {ln!r} not found")
        if ln in seen:
            raise ValueError(f"line must be configured exactly once - offset {ln} repeats")
        seen[ln] = settings or LineSettings()
    for offset in seen:
        if not 0 <= offset < len(chip.lines):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if chip.lines[offset].consumer is not None:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
    values = {k: v for k, v in (output_values or {}).items() if isinstance(k, int)}
    for offset, settings in seen.items():
        chip.lines[offset].consumer = consumer or "?"
        chip._configure(offset, settings, values.get(offset))
    return LineRequest(chip, list(seen))


__all__ = [
    "ChipClosedError",
    "LineRequest",
    "LineSettings",
    "RequestReleasedError",
    "fake_install_chip",
    "is_gpiochip_device",
    "line",
    "request_lines",
]
