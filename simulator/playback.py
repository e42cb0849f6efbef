"""Playback: the ground truth of a live ``run``, as its devices actually played it.

The model's truth (``simulator.truth``) says what happens at which simulated second. A live run
plays the model in scaled real time on three channels, each from its own loop: the receiver's
epochs (``GNSSTalker``), the ignition line (``run``'s drive loop) and the adapter, which answers
every request with the state at that moment. Each loop reports what it has just shown:
the simulated time of the state (``content_t_s``) and the live clock's time when it showed it
(``now_s``). A truth event is released once its channel has shown a state at or after the
event's onset, and timed at the onset plus that channel's delay (``now_s - content_t_s``).

So the truth file of a run is what the run did, not a copy of the model's: a talker that falls
behind at x60 writes its events late by as much, a run stopped early lists only the events it
reached, and a run at x60 matches the same run at x1 only if both kept time.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterable
from enum import StrEnum

from simulator.truth import TruthEvent, TruthType

# A state "at or after the onset": model times are multiples of 0.1 s computed in floating point.
_EPSILON_S = 1e-6


class Channel(StrEnum):
    """Where a perfect observer of the van first sees an event begin."""

    GNSS = "gnss"  # position and speed: the receiver's epochs
    IGNITION = "ignition"  # the ignition line file
    OBD = "obd"  # the adapter: link, trouble codes, fuel level, battery voltage


_CHANNELS = {
    TruthType.IGNITION_ON: Channel.IGNITION,
    TruthType.IGNITION_OFF: Channel.IGNITION,
    TruthType.OBD_LOST: Channel.OBD,
    TruthType.OBD_REGAINED: Channel.OBD,
    TruthType.DTC_SET: Channel.OBD,
    TruthType.DTC_CLEARED: Channel.OBD,
    TruthType.LOW_FUEL: Channel.OBD,
    TruthType.LOW_BATTERY: Channel.OBD,
}


def channel_of(kind: TruthType) -> Channel:
    """The channel that shows an event of ``kind``; everything about motion is GNSS."""
    return _CHANNELS.get(kind, Channel.GNSS)


class Playback:
    """The truth events a live run has played so far (``show`` from any thread)."""

    def __init__(self, events: Iterable[TruthEvent]) -> None:
        # (rank in the model's truth, event): the rank orders events released at equal times.
        self._pending: dict[Channel, deque[tuple[int, TruthEvent]]] = {c: deque() for c in Channel}
        ranked = sorted(enumerate(events), key=lambda pair: (pair[1].t_s, pair[0]))
        for rank, event in ranked:
            self._pending[channel_of(event.type)].append((rank, event))
        self._played: list[tuple[float, int, TruthEvent]] = []
        self._lock = threading.Lock()
        self.max_delay_s = {c: 0.0 for c in Channel}

    def show(self, channel: Channel, content_t_s: float, now_s: float) -> None:
        """``channel`` showed the model's state at ``content_t_s`` when the live clock read
        ``now_s`` (simulated seconds both)."""
        delay_s = max(now_s - content_t_s, 0.0)
        with self._lock:
            self.max_delay_s[channel] = max(self.max_delay_s[channel], delay_s)
            pending = self._pending[channel]
            while pending and pending[0][1].t_s <= content_t_s + _EPSILON_S:
                rank, event = pending.popleft()
                played = dataclasses.replace(event, t_s=round(event.t_s + delay_s, 1))
                self._played.append((played.t_s, rank, played))

    def events(self) -> list[TruthEvent]:
        """The events released so far, in time order (the model's order among equal times)."""
        with self._lock:
            return [event for _, _, event in sorted(self._played, key=lambda p: (p[0], p[1]))]

    def unplayed(self) -> int:
        """Events not reached (yet)."""
        with self._lock:
            return sum(len(q) for q in self._pending.values())
