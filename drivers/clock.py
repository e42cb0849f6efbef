"""System clock setter: steps the wall clock to GNSS UTC when it is plainly wrong.

The Pi has no real-time clock: until NTP or GNSS sets it, wall time starts from the last shutdown
(fake-hwclock) or 1970. When a valid fix's UTC differs from the system clock by more than
``threshold_s``, we step ``CLOCK_REALTIME`` to it. Within the threshold we leave it alone, so an
NTP-disciplined clock is never fought over. Stepping needs CAP_SYS_TIME (``AmbientCapabilities=
CAP_SYS_TIME`` in the unit); without it we log once and carry on.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _clock_settime(unix_s: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, unix_s)


class SystemClockSetter:
    """Decides whether to step the system clock to a fix's UTC, and does it."""

    def __init__(
        self,
        threshold_s: float = 2.0,
        *,
        now: Callable[[], float] = time.time,
        set_time: Callable[[float], None] = _clock_settime,
    ) -> None:
        self._threshold_s = threshold_s
        self._now = now
        self._set_time = set_time
        self.enabled = True
        self.steps = 0

    def observe(self, utc: dt.datetime) -> bool:
        """Step the clock to ``utc`` if it is off by more than the threshold; True if stepped."""
        if not self.enabled:
            return False
        target_s = utc.timestamp()
        offset_s = target_s - self._now()
        if abs(offset_s) <= self._threshold_s:
            return False
        try:
            self._set_time(target_s)
        except PermissionError:
            self.enabled = False
            logger.warning(
                "cannot set the system clock from GNSS (needs CAP_SYS_TIME); not trying again"
            )
            return False
        except OSError as exc:
            self.enabled = False
            logger.warning("cannot set the system clock from GNSS: %s; not trying again", exc)
            return False
        self.steps += 1
        logger.info("system clock stepped by %+.3f s to GNSS UTC %s", offset_s, utc.isoformat())
        return True
