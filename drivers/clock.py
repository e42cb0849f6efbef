"""System clock setter: steps the wall clock to GNSS UTC while nothing else disciplines it.

The Pi has no real-time clock: until NTP or GNSS sets it, wall time starts from the last shutdown
(fake-hwclock) or 1970. The setter steps ``CLOCK_REALTIME`` to a valid fix's UTC only when both
hold:

- the kernel says the clock is **not synchronized** (adjtimex(2): maximum error at its 16 s
  ceiling), so a clock that NTP (systemd-timesyncd, chrony, ntpd) disciplines is never fought
  over, whatever GNSS says;
- it differs from the fix by more than ``threshold_s``, the fix's UTC being carried forward by
  the monotonic time elapsed since the epoch was read (``utc + (now_mono - ts_mono)``), so the
  decoding latency is not stepped into the clock.

A step itself leaves the kernel unsynchronized (settimeofday resets the NTP state), so GNSS
keeps the clock within the threshold until NTP takes over. Reading the kernel state and stepping
both need the ``@clock`` system calls and stepping needs CAP_SYS_TIME: the unit grants them only
with the drop-in ``systemd/gnss-clock.conf``. Without it the setter logs once and stops trying.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

STA_UNSYNC = 0x0040  # linux/timex.h status bit: "clock unsynchronized"
TIME_ERROR = 5  # adjtimex(2) return value: the clock is not synchronized
# The kernel grows the maximum error by 500 ppm a second and caps it at NTP_PHASE_LIMIT (16 s);
# an NTP daemon resets it on each update, settimeofday(2) sets it to the cap.
MAXERROR_UNSYNCED_US = 16_000_000
NO_CLOCK_ACCESS = (
    "needs CAP_SYS_TIME and the @clock system calls: install the drop-in"
    " /usr/share/telematics-agent/gnss-clock.conf, see docs/install.md"
)


@dataclass(frozen=True, slots=True)
class KernelClock:
    """What adjtimex(2) says about the system clock."""

    state: int  # adjtimex's return value: TIME_OK (0) .. TIME_ERROR (5)
    status: int  # STA_* bits
    maxerror_us: int

    @property
    def synchronized(self) -> bool:
        # The same rule as systemd-timedated (`timedatectl show -p NTPSynchronized`, which
        # `telematics-agent check` reports): STA_UNSYNC alone is no proof, because chrony
        # without `rtcsync` keeps it set while disciplining the clock, to stop the kernel's
        # 11-minute RTC writes.
        return self.maxerror_us < MAXERROR_UNSYNCED_US


class _Timex(ctypes.Structure):
    # struct timex as glibc's adjtimex() takes it; the C type `long` (ctypes.c_long) makes the
    # offsets right on 32-bit (armhf) and 64-bit (arm64) Raspberry Pi OS alike. Only `modes`
    # (0: read, change nothing) goes in; the kernel fills the rest, padding included.
    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),  # constant .. tai and the reserved words
    )


def read_kernel_clock() -> KernelClock:
    """The kernel's view of the system clock; OSError when it cannot be asked.

    Under the unit without the gnss-clock drop-in, the system call filter refuses adjtimex
    with EPERM (PermissionError).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    timex = _Timex()
    state = int(libc.adjtimex(ctypes.byref(timex)))
    if state == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex: {os.strerror(err)}")
    return KernelClock(state, int(timex.status), int(timex.maxerror))


TIMESYNCD_SYNCHRONIZED = "/run/systemd/timesync/synchronized"


def synchronized_utc(
    kernel_clock: Callable[[], KernelClock] = read_kernel_clock,
    timesyncd_flag: str = TIMESYNCD_SYNCHRONIZED,
    wall: Callable[[], float] = time.time,
) -> dt.datetime | None:
    """UTC now if something says the system clock is right, else None.

    The kernel's view first (adjtimex, as the clock setter reads it); where the unit's system
    call filter refuses that (the default unit, without the gnss-clock drop-in), the flag file
    systemd-timesyncd touches once it has synchronized. A Pi with no RTC boots at the last
    shutdown's time (fake-hwclock), so an unproven clock gives nothing rather than a wrong date.
    """
    try:
        synced = kernel_clock().synchronized
    except OSError:
        synced = os.path.exists(timesyncd_flag)
    return dt.datetime.fromtimestamp(wall(), dt.UTC) if synced else None


def _clock_settime(unix_s: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, unix_s)


class SystemClockSetter:
    """Decides whether to step the system clock to a fix's UTC, and does it.

    Every seam is injectable (wall clock, monotonic clock, the kernel's sync state, the
    setter), so the decision is tested without touching the machine's clock. ``monotonic``
    must be the clock that stamped the fixes' ``ts_mono``.
    """

    def __init__(
        self,
        threshold_s: float = 2.0,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        kernel_clock: Callable[[], KernelClock] = read_kernel_clock,
        set_time: Callable[[float], None] = _clock_settime,
    ) -> None:
        self._threshold_s = threshold_s
        self._wall = wall
        self._monotonic = monotonic
        self._kernel_clock = kernel_clock
        self._set_time = set_time
        self.enabled = True
        self.steps = 0
        self.deferred_to_ntp = 0  # fixes that disagreed while NTP held the clock
        self._ntp_synced: bool | None = None

    def observe(self, utc: dt.datetime, ts_mono: float) -> bool:
        """Consider a fix read at ``ts_mono``; True if the clock was stepped."""
        if not self.enabled:
            return False
        age_s = self._monotonic() - ts_mono
        if age_s < 0:
            # A fix stamped by another clock than ours: its age is meaningless, do nothing.
            logger.debug("fix from %.3f s in the future: clock not set from it", -age_s)
            return False
        offset_s = utc.timestamp() + age_s - self._wall()
        if abs(offset_s) <= self._threshold_s:
            return False  # the usual case, decided without a system call
        try:
            synced = self._kernel_clock().synchronized
        except OSError as exc:
            self._give_up(exc)
            return False
        self._note_ntp(synced)
        if synced:
            self.deferred_to_ntp += 1
            return False
        # Carried forward again at the last moment: what reaches the clock is the fix's time
        # now, not when the decision began.
        target_s = utc.timestamp() + (self._monotonic() - ts_mono)
        try:
            self._set_time(target_s)
        except OSError as exc:
            self._give_up(exc)
            return False
        self.steps += 1
        logger.info(
            "system clock stepped by %+.3f s to GNSS UTC (fix %s, %.3f s old)",
            offset_s,
            utc.isoformat(),
            age_s,
        )
        return True

    def _note_ntp(self, synced: bool) -> None:
        if synced == self._ntp_synced:
            return
        self._ntp_synced = synced
        if synced:
            logger.info("system clock synchronized by NTP: not setting it from GNSS")
        else:
            logger.info("system clock not synchronized: GNSS may set it")

    def _give_up(self, exc: OSError) -> None:
        self.enabled = False
        if isinstance(exc, PermissionError):
            logger.warning(
                "cannot set the system clock from GNSS (%s); not trying again", NO_CLOCK_ACCESS
            )
        else:
            logger.warning("cannot set the system clock from GNSS: %s; not trying again", exc)
