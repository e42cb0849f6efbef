"""The system clock setter's decision, against fake clocks; the kernel reader on this kernel.

The real clock_settime needs CAP_SYS_TIME and would move the test machine's clock: every test
here injects the wall clock, the monotonic clock, the kernel's sync state and the setter.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import sys
from pathlib import Path

import pytest

from drivers.clock import (
    MAXERROR_UNSYNCED_US,
    STA_UNSYNC,
    TIME_ERROR,
    KernelClock,
    SystemClockSetter,
    read_kernel_clock,
    synchronized_utc,
)

UTC = dt.datetime(2025, 6, 2, 12, 0, 0, tzinfo=dt.UTC)
UNSYNCED = KernelClock(TIME_ERROR, STA_UNSYNC, MAXERROR_UNSYNCED_US)
NTP_SYNCED = KernelClock(0, 0, 120_000)  # timesyncd: 120 ms maximum error


class FakeMachine:
    """A wall clock, a monotonic clock and the kernel's NTP state that the setter moves."""

    def __init__(self, wall_s: float, mono_s: float = 100.0) -> None:
        self.wall_s = wall_s
        self.mono_s = mono_s
        self.kernel = UNSYNCED
        self.kernel_reads = 0
        self.set_calls: list[float] = []
        self.refuse: OSError | None = None  # what clock_settime raises
        self.refuse_read: OSError | None = None  # what adjtimex raises

    def wall(self) -> float:
        return self.wall_s

    def monotonic(self) -> float:
        return self.mono_s

    def read_kernel(self) -> KernelClock:
        self.kernel_reads += 1
        if self.refuse_read is not None:
            raise self.refuse_read
        return self.kernel

    def set_time(self, unix_s: float) -> None:
        self.set_calls.append(unix_s)
        if self.refuse is not None:
            raise self.refuse
        self.wall_s = unix_s
        # What the kernel does on settimeofday: the NTP state is reset to unsynchronized.
        self.kernel = UNSYNCED

    def elapse(self, seconds: float) -> None:
        self.wall_s += seconds
        self.mono_s += seconds

    def setter(self, threshold_s: float = 2.0) -> SystemClockSetter:
        return SystemClockSetter(
            threshold_s,
            wall=self.wall,
            monotonic=self.monotonic,
            kernel_clock=self.read_kernel,
            set_time=self.set_time,
        )


def test_unsynced_clock_far_off_is_stepped_to_the_fix_carried_forward() -> None:
    machine = FakeMachine(wall_s=UTC.timestamp() - 3600.0)  # fake-hwclock: an hour behind
    setter = machine.setter()
    read_at = machine.mono_s
    machine.elapse(0.4)  # the epoch was decoded and handed over 0.4 s after its first byte
    assert setter.observe(UTC, read_at) is True
    assert machine.set_calls == [pytest.approx(UTC.timestamp() + 0.4, abs=1e-9)]
    assert setter.steps == 1
    # The next fix, one second later, agrees: no second step.
    machine.elapse(1.0)
    assert setter.observe(UTC + dt.timedelta(seconds=1), machine.mono_s) is False
    assert len(machine.set_calls) == 1


def test_latency_is_not_mistaken_for_an_offset() -> None:
    # The clock is right; the fix is 2.5 s old when it arrives (a slow reader, a busy Pi).
    # Comparing the fix's UTC with the clock now would step the clock 2.5 s back.
    machine = FakeMachine(wall_s=UTC.timestamp() + 2.5)
    setter = machine.setter()
    assert setter.observe(UTC, machine.mono_s - 2.5) is False
    assert machine.set_calls == []
    assert machine.kernel_reads == 0, "within the threshold no system call is made"


@pytest.mark.parametrize("offset_s", [1.9, -1.9])
def test_within_the_threshold_the_clock_is_left_alone(offset_s: float) -> None:
    machine = FakeMachine(wall_s=UTC.timestamp() + offset_s)
    setter = machine.setter()
    assert setter.observe(UTC, machine.mono_s) is False
    assert machine.set_calls == [] and machine.kernel_reads == 0


@pytest.mark.parametrize("offset_s", [-3600.0, 2.1, 86400.0 * 400])
def test_ntp_synchronized_clock_is_never_fought_over(
    offset_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FakeMachine(wall_s=UTC.timestamp() + offset_s)
    machine.kernel = NTP_SYNCED
    setter = machine.setter()
    with caplog.at_level(logging.INFO, logger="drivers.clock"):
        for i in range(5):
            assert setter.observe(UTC + dt.timedelta(seconds=i), machine.mono_s) is False
            machine.elapse(1.0)
    assert machine.set_calls == []
    assert setter.deferred_to_ntp == 5 and setter.enabled
    said = [r.getMessage() for r in caplog.records]
    assert said.count("system clock synchronized by NTP: not setting it from GNSS") == 1


def test_chrony_style_sta_unsync_with_a_small_maxerror_counts_as_synchronized() -> None:
    # chrony without rtcsync keeps STA_UNSYNC set while it disciplines the clock.
    machine = FakeMachine(wall_s=UTC.timestamp() + 30.0)
    machine.kernel = KernelClock(TIME_ERROR, STA_UNSYNC, 50_000)
    assert machine.setter().observe(UTC, machine.mono_s) is False
    assert machine.set_calls == []


def test_gnss_takes_over_when_ntp_loses_the_clock() -> None:
    machine = FakeMachine(wall_s=UTC.timestamp() + 10.0)
    machine.kernel = NTP_SYNCED
    setter = machine.setter()
    assert setter.observe(UTC, machine.mono_s) is False
    # No network for long: the kernel's maximum error has grown to its cap.
    machine.kernel = KernelClock(TIME_ERROR, STA_UNSYNC, MAXERROR_UNSYNCED_US)
    machine.elapse(1.0)
    utc = UTC + dt.timedelta(seconds=1)
    assert setter.observe(utc, machine.mono_s) is True
    assert machine.set_calls == [pytest.approx(utc.timestamp())]


def test_a_fix_stamped_in_the_future_is_ignored() -> None:
    machine = FakeMachine(wall_s=0.0)
    setter = machine.setter()
    assert setter.observe(UTC, machine.mono_s + 5.0) is False
    assert machine.set_calls == [] and setter.enabled


@pytest.mark.parametrize(
    ("where", "error", "message"),
    [
        ("set", PermissionError(errno.EPERM, "Operation not permitted"), "gnss-clock.conf"),
        ("set", OSError(errno.EINVAL, "Invalid argument"), "Invalid argument"),
        # The unit's system call filter without the drop-in refuses adjtimex itself.
        ("read", PermissionError(errno.EPERM, "adjtimex: Operation not permitted"), "CAP_SYS_TIME"),
    ],
)
def test_without_access_to_the_clock_it_gives_up_once(
    where: str, error: OSError, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    machine = FakeMachine(wall_s=0.0)
    if where == "set":
        machine.refuse = error
    else:
        machine.refuse_read = error
    setter = machine.setter()
    with caplog.at_level(logging.WARNING, logger="drivers.clock"):
        for _ in range(3):
            assert setter.observe(UTC, machine.mono_s) is False
    assert len(machine.set_calls) == (1 if where == "set" else 0)
    assert machine.kernel_reads == 1
    assert not setter.enabled and setter.steps == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0], warnings


@pytest.mark.skipif(sys.platform != "linux", reason="adjtimex(2) is Linux's")
def test_kernel_reader_decodes_this_kernels_adjtimex() -> None:
    # Reading needs no privilege. The layout is checked by what the kernel guarantees: the
    # maximum error never exceeds its cap, and STA_UNSYNC always makes the call TIME_ERROR.
    clock = read_kernel_clock()
    assert 0 <= clock.maxerror_us <= MAXERROR_UNSYNCED_US
    assert 0 <= clock.state <= TIME_ERROR
    if clock.status & STA_UNSYNC:
        assert clock.state == TIME_ERROR
    assert clock.synchronized == (clock.maxerror_us < MAXERROR_UNSYNCED_US)


def test_synchronized_utc_only_from_a_clock_known_to_be_right(tmp_path: Path) -> None:
    wall = UTC.timestamp()
    flag = tmp_path / "synchronized"

    def refused() -> KernelClock:
        raise PermissionError(errno.EPERM, "adjtimex: Operation not permitted")

    assert synchronized_utc(lambda: NTP_SYNCED, str(flag), lambda: wall) == UTC
    assert synchronized_utc(lambda: UNSYNCED, str(flag), lambda: wall) is None
    # The unit's system call filter refuses adjtimex: timesyncd's flag file decides.
    assert synchronized_utc(refused, str(flag), lambda: wall) is None
    flag.touch()
    assert synchronized_utc(refused, str(flag), lambda: wall) == UTC
    # The kernel's word wins over a stale flag.
    assert synchronized_utc(lambda: UNSYNCED, str(flag), lambda: wall) is None
