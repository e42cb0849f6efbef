"""GPIO backends, the ignition reader thread, power-hold and LED patterns."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.errors import DeviceUnavailableError
from drivers.gpio import (
    GPIOLibraryError,
    GPIOSettings,
    IgnitionReader,
    LEDPattern,
    PowerHold,
    SimulatedGPIO,
    led_level,
    led_next_change_s,
    open_backend,
)
from drivers.samples import IgnitionSample, Sample
from simulator.ignition import IgnitionLine


class Collector:
    def __init__(self) -> None:
        self.samples: list[IgnitionSample] = []
        self._cond = threading.Condition()

    def __call__(self, sample: Sample) -> None:
        assert isinstance(sample, IgnitionSample)
        with self._cond:
            self.samples.append(sample)
            self._cond.notify_all()

    def wait(self, pred: Callable[[list[IgnitionSample]], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not pred(self.samples):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


def _reader(line: Path, collector: Collector, **kw: object) -> IgnitionReader:
    settings = GPIOSettings(
        backend="simulated", line_file=str(line), debounce_s=0.1, poll_s=0.01, **kw  # type: ignore[arg-type]
    )
    return IgnitionReader(settings, collector, time.monotonic)


def test_simulated_backend_reads_the_simulator_line_and_writes_outputs(tmp_path: Path) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    gpio = SimulatedGPIO(line.path)
    line.set(True)
    assert gpio.read(17) == 1
    line.set(False)
    assert gpio.read(17) == 0
    gpio.write(5, True)
    assert gpio.output_path(5).read_text() == "1\n"
    gpio.write(5, False)
    assert gpio.output_path(5).read_text() == "0\n"


@pytest.mark.parametrize("content", ["", "2\n", "on", "\x00\x01"])
def test_simulated_backend_rejects_garbage_clearly(tmp_path: Path, content: str) -> None:
    f = tmp_path / "ignition"
    f.write_text(content)
    with pytest.raises(DeviceUnavailableError, match="must be 0 or 1"):
        SimulatedGPIO(f).read(17)
    with pytest.raises(DeviceUnavailableError, match="missing"):
        SimulatedGPIO(tmp_path / "absent").read(17)


def test_reader_emits_debounced_changes_and_the_initial_state(tmp_path: Path) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    line.set(False)
    got = Collector()
    reader = _reader(line.path, got)
    reader.start()
    try:
        assert got.wait(lambda s: len(s) == 1), "one sample at start"
        assert got.samples[0].on is False and got.samples[0].source == "gpio"
        # A 30 ms blip (a cranking starter) is shorter than the debounce: no change.
        line.set(True)
        time.sleep(0.03)
        line.set(False)
        time.sleep(0.3)
        assert len(got.samples) == 1
        line.set(True)
        assert got.wait(lambda s: len(s) == 2)
        assert got.samples[1].on is True
        assert reader.ignition_on is True
        line.set(False)
        assert got.wait(lambda s: len(s) == 3)
        assert got.samples[2].on is False
    finally:
        reader.stop()


def test_active_low_inverts_the_line(tmp_path: Path) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    line.set(False)
    got = Collector()
    reader = _reader(line.path, got, active_low=True)
    reader.start()
    try:
        assert got.wait(lambda s: len(s) == 1)
        assert got.samples[0].on is True
    finally:
        reader.stop()


def test_unreadable_line_is_counted_and_the_reader_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ignition"
    got = Collector()
    reader = _reader(path, got)
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while reader.read_errors < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.read_errors >= 3
        assert got.samples == []
        IgnitionLine(path).set(True)
        assert got.wait(lambda s: len(s) == 1)
        assert got.samples[0].on is True
    finally:
        reader.stop()


def test_reader_drives_power_hold_and_led_outputs(tmp_path: Path) -> None:
    line = IgnitionLine(tmp_path / "ignition")
    line.set(True)
    got = Collector()
    reader = _reader(line.path, got, power_hold_pin=5, led_pin=6)
    out5, out6 = tmp_path / "gpio5.out", tmp_path / "gpio6.out"
    reader.led_pattern = LEDPattern.ALL_GOOD
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while not (out5.exists() and out6.exists()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out5.read_text() == "1\n", "power-hold asserted from the start"
        assert out6.read_text() == "1\n", "steady LED for all good"
        reader.power_hold = False
        deadline = time.monotonic() + 5
        while out5.read_text() != "0\n" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out5.read_text() == "0\n"
    finally:
        reader.stop()
    assert out6.read_text() == "0\n", "LED off when the agent stops"


def test_led_patterns_are_distinguishable() -> None:
    def samples(p: LEDPattern) -> list[bool]:
        return [led_level(p, i * 0.05) for i in range(40)]  # one 2 s cycle

    assert all(samples(LEDPattern.ALL_GOOD))
    assert not any(samples(LEDPattern.OFF))
    slow = samples(LEDPattern.NO_FIX)
    assert slow[:20] == [True] * 20 and slow[20:] == [False] * 20
    flashes = samples(LEDPattern.NO_BROKER)
    rising = sum(1 for a, b in zip([False, *flashes], flashes, strict=False) if b and not a)
    assert rising == 2, "a double flash"
    assert sum(flashes) < 10


@pytest.mark.parametrize("pattern", list(LEDPattern))
def test_led_next_change_names_exactly_when_the_level_flips(pattern: LEDPattern) -> None:
    # The reader sleeps until then instead of polling the pattern, so it must never be late
    # (the LED would show a wrong pattern) nor early by more than a moment (wasted wake-ups).
    for i in range(400):
        t = 1000.0 + i * 0.0137
        change = led_next_change_s(pattern, t)
        if change is None:
            assert len({led_level(pattern, t + k * 0.01) for k in range(300)}) == 1
            continue
        assert 0.0 < change <= 2.0
        level = led_level(pattern, t)
        assert all(led_level(pattern, t + f * change) == level for f in (0.0, 0.5, 0.99))
        assert led_level(pattern, t + change + 1e-6) != level


def test_line_is_polled_four_times_per_debounce_within_bounds() -> None:
    assert GPIOSettings(debounce_s=2.0).poll_period_s == 0.25
    assert GPIOSettings(debounce_s=0.4).poll_period_s == pytest.approx(0.1)
    assert GPIOSettings(debounce_s=0.0).poll_period_s == 0.05


def test_power_hold_waits_for_flush_then_the_release_delay() -> None:
    hold = PowerHold(release_s=60.0)
    assert hold.update(0.0, None, spool_flushed=False), "unknown ignition: hold"
    assert hold.update(1.0, True, spool_flushed=True), "ignition on: hold"
    assert hold.update(2.0, False, spool_flushed=False), "off but spool not flushed: hold"
    assert hold.update(10.0, False, spool_flushed=True), "flushed: the delay starts"
    assert hold.update(69.0, False, spool_flushed=True)
    assert not hold.update(70.0, False, spool_flushed=True), "released after the delay"
    assert hold.released
    assert hold.update(80.0, True, spool_flushed=True), "ignition back on: hold again"


def test_power_hold_delay_restarts_when_new_data_arrives() -> None:
    hold = PowerHold(release_s=10.0)
    assert hold.update(0.0, False, spool_flushed=True)
    assert hold.update(5.0, False, spool_flushed=False)
    assert hold.update(12.0, False, spool_flushed=True)
    assert not hold.update(22.0, False, spool_flushed=True)


def test_power_hold_gives_up_waiting_for_the_broker_after_max_s() -> None:
    hold = PowerHold(release_s=60.0, max_s=1800.0)
    assert hold.update(0.0, True, spool_flushed=False)
    assert hold.update(100.0, False, spool_flushed=False), "off at 100 s, spool full: hold"
    assert hold.update(1899.0, False, spool_flushed=False)
    assert not hold.update(1900.0, False, spool_flushed=False), "30 min after off: release"
    assert not hold.update(1901.0, False, spool_flushed=True), "stays released"
    assert hold.update(2000.0, True, spool_flushed=False), "next drive: hold again"
    assert hold.update(3000.0, False, spool_flushed=False), "and the bound starts afresh"
    assert not hold.update(4800.0, False, spool_flushed=False)
    unbounded = PowerHold(release_s=60.0, max_s=0.0)
    assert unbounded.update(0.0, False, spool_flushed=False)
    assert unbounded.update(1e6, False, spool_flushed=False), "0: wait for the spool forever"


@pytest.mark.skipif(
    importlib.util.find_spec("RPi") is not None,
    reason="on a Pi RPi.GPIO is installed; this checks the message where it is not",
)
def test_rpigpio_missing_library_names_the_package() -> None:
    with pytest.raises(GPIOLibraryError, match=r"RPi\.GPIO.*python3-rpi\.gpio"):
        open_backend(GPIOSettings(backend="rpigpio"))


def test_gpiod_missing_chip_is_a_clear_device_error(tmp_path: Path) -> None:
    chip = tmp_path / "gpiochip9"
    with pytest.raises(DeviceUnavailableError, match="gpiochip9: cannot request GPIO lines"):
        open_backend(GPIOSettings(backend="gpiod", chip=str(chip)))
    assert not os.path.exists(chip)


# -- RPi.GPIO and libgpiod backends against behaving fakes of the libraries (tests/fakes) -----

FAKES = Path(__file__).resolve().parents[1] / "fakes"
CHIP = "/dev/gpiochip0"


@pytest.fixture
def fake_libraries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``RPi.GPIO`` and ``gpiod`` import the fakes for this test, with fresh state."""

    def faked(name: str) -> bool:
        return name.split(".")[0] in ("RPi", "gpiod")

    for name in [n for n in sys.modules if faked(n)]:
        monkeypatch.delitem(sys.modules, name)  # the real gpiod comes back afterwards
    monkeypatch.syspath_prepend(str(FAKES))
    yield
    for name in [n for n in sys.modules if faked(n)]:
        del sys.modules[name]


def _rpi() -> Any:
    module = importlib.import_module("RPi.GPIO")
    assert module.__file__ is not None and module.__file__.startswith(str(FAKES))
    return module


def _gpiod() -> Any:
    module = importlib.import_module("gpiod")
    assert module.__file__ is not None and module.__file__.startswith(str(FAKES))
    return module


def _noise(read: Callable[[], int]) -> set[int]:
    return {read() for _ in range(6)}


@pytest.mark.usefixtures("fake_libraries")
def test_rpigpio_reads_the_line_by_bcm_number_without_internal_pull() -> None:
    gpio = _rpi()
    board = gpio.fake_board
    assert board.pins[17].pull == gpio.PUD_DOWN, "the SoC resets GPIO 17 with a pull-down"
    backend = open_backend(GPIOSettings(backend="rpigpio", pin=17))
    # BCM numbering: GPIO 17 is header pin 11; in BOARD numbers 17 is a 3.3 V pin (an error).
    assert gpio.getmode() == gpio.BCM
    assert (board.pins[17].function, board.pins[17].pull) == (gpio.IN, gpio.PUD_OFF)
    for level in (1, 0, 1):
        board.drive(17, level)  # the opto-coupler and its resistor drive the line
        assert backend.read(17) == level
    # Nothing driving it (a missing resistor): noise, not a reassuring steady level.
    board.drive(17, None)
    assert _noise(lambda: backend.read(17)) == {0, 1}


@pytest.mark.usefixtures("fake_libraries")
def test_rpigpio_outputs_start_at_their_level_and_close_releases_only_our_channels() -> None:
    gpio = _rpi()
    board = gpio.fake_board
    # An earlier run left GPIO 6's output latch high, and another part of this process drives
    # GPIO 22: set-up without `initial` would light the LED at once.
    gpio.setmode(gpio.BCM)
    gpio.setup(6, gpio.OUT, initial=gpio.HIGH)
    gpio.cleanup(6)
    assert board.pins[6].latch == 1
    gpio.setup(22, gpio.OUT, initial=gpio.HIGH)
    seen_led, seen_hold = len(board.pins[6].history), len(board.pins[5].history)

    backend = open_backend(GPIOSettings(backend="rpigpio", pin=17, power_hold_pin=5, led_pin=6))
    assert board.pins[5].function == gpio.OUT and board.pins[6].function == gpio.OUT
    assert board.pins[6].history[seen_led:] == [0], "the LED never glitches high"
    # Power-hold is high from its very first level: never a low glitch on a restart.
    assert board.level(5) == 1 and 0 not in board.pins[5].history[seen_hold:]
    backend.write(5, False)
    backend.write(6, True)
    assert (board.level(5), board.level(6)) == (0, 1)
    backend.write(6, False)
    assert board.level(6) == 0

    backend.close()
    for pin in (5, 6, 17):
        assert (board.pins[pin].function, board.pins[pin].pull) == (gpio.IN, gpio.PUD_OFF)
    with pytest.raises(RuntimeError, match=r"setup\(\) the GPIO channel first"):
        gpio.input(17)
    assert board.pins[22].function == gpio.OUT and board.level(22) == 1, "not ours: untouched"


@pytest.mark.usefixtures("fake_libraries")
def test_gpiod_requests_the_input_without_bias_and_outputs_at_their_level() -> None:
    gpiod = _gpiod()
    from gpiod.line import Bias, Direction, Value

    chip = gpiod.fake_install_chip(CHIP)
    # An earlier run left the LED's line 6 driven high when it released it.
    gpiod.request_lines(
        CHIP, {6: gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)}
    ).release()
    assert chip.level(6) == 1
    seen, seen_led = len(chip.lines[5].history), len(chip.lines[6].history)

    backend = open_backend(
        GPIOSettings(backend="gpiod", chip=CHIP, pin=17, power_hold_pin=5, led_pin=6)
    )
    line17 = chip.lines[17]
    assert (line17.direction, line17.bias) == (Direction.INPUT, Bias.DISABLED)
    assert line17.consumer == "telematics-agent" and line17.active_low is False
    for level in (1, 0, 1):
        chip.drive(17, level)
        assert backend.read(17) == level
    chip.drive(17, None)
    assert _noise(lambda: backend.read(17)) == {0, 1}, "no pull hides a missing resistor"

    # Power-hold is driven high from the request on, the LED low.
    assert chip.lines[5].direction == Direction.OUTPUT and chip.level(5) == 1
    assert 0 not in chip.lines[5].history[seen:]
    assert chip.lines[6].direction == Direction.OUTPUT and chip.level(6) == 0
    assert chip.lines[6].history[seen_led:] == [0], "the LED never glitches high"
    backend.write(5, False)
    assert chip.level(5) == 0
    backend.write(5, True)
    assert chip.level(5) == 1

    backend.close()
    assert all(chip.lines[o].consumer is None for o in (5, 6, 17)), "lines handed back"
    with pytest.raises(gpiod.RequestReleasedError):
        backend.read(17)
    gpiod.request_lines(CHIP, {17: None}, consumer="gpioget").release()  # free for others


@pytest.mark.usefixtures("fake_libraries")
def test_gpiod_line_held_by_another_program_is_a_clear_device_error() -> None:
    gpiod = _gpiod()
    gpiod.fake_install_chip(CHIP)
    other = gpiod.request_lines(CHIP, {17: None}, consumer="gpiomon")
    try:
        with pytest.raises(DeviceUnavailableError, match="gpiochip0: cannot request GPIO lines"):
            open_backend(GPIOSettings(backend="gpiod", chip=CHIP, pin=17))
    finally:
        other.release()


@pytest.mark.parametrize("backend", ["rpigpio", "gpiod"])
@pytest.mark.usefixtures("fake_libraries")
def test_active_low_ignition_through_each_library_backend(backend: str) -> None:
    if backend == "rpigpio":
        drive = _rpi().fake_board.drive
    else:
        drive = _gpiod().fake_install_chip(CHIP).drive
    drive(17, 0)  # active-low wiring: the ignition pulls the line low
    settings = GPIOSettings(
        backend=backend, chip=CHIP, pin=17, active_low=True, debounce_s=0.1, poll_s=0.01
    )
    got = Collector()
    reader = IgnitionReader(settings, got, time.monotonic)
    reader.start()
    try:
        assert got.wait(lambda s: len(s) == 1)
        assert got.samples[0].on is True, "low = on, inverted exactly once"
        drive(17, 1)
        assert got.wait(lambda s: len(s) == 2)
        assert got.samples[1].on is False
    finally:
        reader.stop()


@pytest.mark.parametrize("held", [True, False])
@pytest.mark.parametrize("backend", ["rpigpio", "gpiod"])
@pytest.mark.usefixtures("fake_libraries")
def test_stopping_the_reader_keeps_a_held_power_line_driven(backend: str, held: bool) -> None:
    """The drivers stop before the pipeline commits and the publisher drains: letting the
    power-hold line go then would cut the Pi's power in the middle of its own shutdown."""
    if backend == "rpigpio":
        gpio = _rpi()
        drive, level = gpio.fake_board.drive, gpio.fake_board.level

        def released(pin: int) -> bool:
            return bool(gpio.fake_board.pins[pin].function == gpio.IN)
    else:
        chip = _gpiod().fake_install_chip(CHIP)
        drive, level = chip.drive, chip.level

        def released(pin: int) -> bool:
            return chip.lines[pin].consumer is None
    drive(17, 1)
    settings = GPIOSettings(
        backend=backend, chip=CHIP, pin=17, power_hold_pin=5, led_pin=6, debounce_s=0.1,
        poll_s=0.01,
    )  # fmt: skip
    reader = IgnitionReader(settings, Collector(), time.monotonic)
    reader.start()
    deadline = time.monotonic() + 5.0
    while level(5) != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert level(5) == 1, "power-hold is driven from the start"
    if not held:
        reader.power_hold = False  # the spool was flushed and the release delay ran out
        deadline = time.monotonic() + 5.0
        while level(5) != 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    reader.stop()
    # A released line is an input again (RPi.GPIO) or back with the kernel (gpiod): its level
    # is the outside circuit's business. A line still ours must be at the level we chose.
    if held:
        assert level(5) == 1 and not released(5), "the hold outlives the reader"
    else:
        assert released(5) or level(5) == 0
    assert released(6) or level(6) == 0, "the LED goes dark"
    if backend == "rpigpio":
        assert released(17) and released(6) and released(5) is not held
