"""Playback: a live run's truth is what its devices showed, and when."""

from __future__ import annotations

import math
import threading
import time
from functools import cache
from pathlib import Path

from simulator.model import VehicleModel
from simulator.playback import Channel, Playback, channel_of
from simulator.pty import PtyDevice
from simulator.scenario import load_scenario
from simulator.talker import GNSSTalker, Receiver
from simulator.truth import TruthEvent, TruthType, derive_truth


def _event(kind: TruthType, t_s: float) -> TruthEvent:
    return TruthEvent(kind, t_s, 51.0, 12.0, {"k": 1})


EVENTS = [
    _event(TruthType.IGNITION_ON, 4.0),
    _event(TruthType.TRIP_START, 9.2),
    _event(TruthType.DTC_SET, 20.0),
    _event(TruthType.HARSH_BRAKE, 29.5),
    _event(TruthType.IGNITION_OFF, 32.2),
]


def test_channels() -> None:
    assert [channel_of(e.type) for e in EVENTS] == [
        Channel.IGNITION,
        Channel.GNSS,
        Channel.OBD,
        Channel.GNSS,
        Channel.IGNITION,
    ]


def test_an_event_is_released_by_its_own_channel_at_its_delay() -> None:
    playback = Playback(EVENTS)
    playback.show(Channel.GNSS, 30.0, 30.0)  # on time: both GNSS events, nothing else
    assert [(e.type, e.t_s) for e in playback.events()] == [
        (TruthType.TRIP_START, 9.2),
        (TruthType.HARSH_BRAKE, 29.5),
    ]
    playback.show(Channel.IGNITION, 4.0, 5.5)  # the line was set 1.5 s late
    playback.show(Channel.OBD, 19.9, 19.9)  # not yet at the DTC
    assert [(e.type, e.t_s) for e in playback.events()] == [
        (TruthType.IGNITION_ON, 5.5),
        (TruthType.TRIP_START, 9.2),
        (TruthType.HARSH_BRAKE, 29.5),
    ]
    assert playback.unplayed() == 2
    assert playback.max_delay_s == {Channel.GNSS: 0.0, Channel.IGNITION: 1.5, Channel.OBD: 0.0}
    played = playback.events()[0]
    assert (played.lat, played.lon, played.data) == (51.0, 12.0, {"k": 1})  # only time moves


def test_a_stopped_run_lists_only_what_it_reached() -> None:
    playback = Playback(EVENTS)
    for channel in Channel:
        playback.show(channel, 12.0, 12.0)
    assert [e.type for e in playback.events()] == [TruthType.IGNITION_ON, TruthType.TRIP_START]


def test_played_on_time_everywhere_is_the_models_truth() -> None:
    truth = derive_truth(_model())
    playback = Playback(truth)
    for channel in Channel:
        playback.show(channel, _model().duration_s, _model().duration_s)
    assert playback.events() == truth


class ManualClock:
    """Simulated time set by the test; real waits are 1000 times shorter than simulated ones."""

    time_scale = 1000.0

    def __init__(self) -> None:
        self.t_s = 0.0

    def now_s(self) -> float:
        return self.t_s


@cache
def _model() -> VehicleModel:
    return VehicleModel(load_scenario("cold_start"))


def test_a_talker_that_falls_behind_delays_the_truth(tmp_path: Path) -> None:
    """The clock jumps 30 s ahead (a stalled machine): the talker catches up in a burst, and
    the GNSS events of those 30 s are written as late as their epochs were."""
    model = _model()
    truth = [e for e in derive_truth(model) if channel_of(e.type) is Channel.GNSS]
    assert truth, "the scenario needs GNSS events"
    first = truth[0].t_s
    playback = Playback(truth)
    clock = ManualClock()
    device = PtyDevice(tmp_path / "gnss0")
    receiver = Receiver(model.scenario.gnss, seed=1)
    shown: list[float] = []
    done = threading.Event()

    def on_shown(t_s: float, now_s: float) -> None:
        playback.show(Channel.GNSS, t_s, now_s)
        shown.append(t_s)
        if t_s >= math.floor(first + 30.0):  # the last epoch due by then
            done.set()

    talker = GNSSTalker(model, clock, device, receiver, shown=on_shown)
    clock.t_s = math.floor(first) - 1.0
    talker.start()
    try:
        deadline = time.monotonic() + 5.0
        while not shown or shown[-1] < clock.t_s:
            assert time.monotonic() < deadline, "the talker never caught up to the clock"
            time.sleep(0.01)
        assert playback.events() == []
        clock.t_s = first + 30.0  # 30 ms of real time behind at x1000: caught up, not skipped
        assert done.wait(5.0)
    finally:
        talker.stop()
    assert talker.epochs_skipped == 0
    released = playback.events()[0]
    # Released by the first epoch at or after the onset, written when the clock read first + 30.
    epoch_s = math.ceil(first)
    assert released.type is truth[0].type
    assert released.t_s == round(first + (first + 30.0 - epoch_s), 1)
