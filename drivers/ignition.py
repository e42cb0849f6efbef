"""Ignition debouncer: turns raw ignition-line levels into debounced IgnitionSamples (sans-IO).

The GPIO backends (RPi.GPIO, libgpiod, simulated) read levels and timestamps; this class decides
what they mean. A level counts once it has held for ``debounce_s`` (a cranking starter motor makes
the ignition feed dip and bounce for a second or so). The emitted sample's ``ts_mono`` is the
moment the new level began, not the moment it was confirmed, so events and trips start when the
key was turned; consumers must accept that it lags the newest sample by up to ``debounce_s``.
"""

from __future__ import annotations

import math

from drivers.samples import IgnitionSample


class IgnitionDebouncer:
    """Feed raw levels (``feed``) and the passing of time (``tick``); get state changes out."""

    def __init__(self, debounce_s: float, active_low: bool = False, source: str = "gpio") -> None:
        if not math.isfinite(debounce_s) or debounce_s < 0:
            raise ValueError(f"debounce_s must be a finite number >= 0, got {debounce_s!r}")
        self._debounce_s = debounce_s
        self._active_low = active_low
        self._source = source
        self._state: bool | None = None  # the debounced state last emitted
        self._candidate: bool | None = None  # the raw state being timed
        self._since = 0.0  # when the candidate began
        self._last_ts: float | None = None
        self.glitches = 0  # level changes that did not last debounce_s

    @property
    def state(self) -> bool | None:
        return self._state

    def feed(self, level: int, ts_mono: float) -> list[IgnitionSample]:
        """One raw level reading (0 or 1; anything non-zero is high) at ``ts_mono``."""
        if not math.isfinite(ts_mono):
            return []
        if self._last_ts is not None and ts_mono < self._last_ts:
            # The clock ran backwards: restart timing from here rather than confirm early.
            self._since = ts_mono
        self._last_ts = ts_mono if self._last_ts is None else max(self._last_ts, ts_mono)
        on = bool(level) != self._active_low
        # The old level held until now: confirm it first if it lasted long enough.
        out = self.tick(ts_mono)
        if on != self._candidate:
            if self._candidate is not None and self._candidate != self._state:
                self.glitches += 1
            self._candidate, self._since = on, ts_mono
        return out + self.tick(ts_mono)

    def tick(self, ts_mono: float) -> list[IgnitionSample]:
        """Confirm the candidate level once it has held for ``debounce_s``."""
        if self._candidate is None or self._candidate == self._state or not math.isfinite(ts_mono):
            return []
        if ts_mono - self._since < self._debounce_s:
            return []
        self._state = self._candidate
        return [IgnitionSample(self._since, self._state, self._source)]
