"""Hypothesis properties of the detectors: parked jitter, sampling-rate invariance, hostile time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.detectors import Stage, build_detectors
from agent.detectors.motion import MotionTracker
from agent.events import Event, EventType
from agent.geofence import parse_geofences
from drivers.samples import (
    DTCSample,
    FixMode,
    FixQuality,
    GNSSFix,
    IgnitionSample,
    Link,
    LinkSample,
    LinkState,
    OBDReading,
    Sample,
)
from tests.unit.test_detect_drive import M_PER_DEG, Drive, config, of, run

LAT0, LON0 = 52.5, 13.4
# A fence whose edge runs through the parking spot, with a walking-pace limit: jitter that
# leaked into geofence or speeding logic would show up at once.
FENCES = parse_geofences(
    {
        "type": "Feature",
        "properties": {"id": "yard", "radius_m": 30, "speed_limit_kmh": 5},
        "geometry": {"type": "Point", "coordinates": [LON0 + 25 / (M_PER_DEG * 0.6088), LAT0]},
    }
)
DRIVING_OR_MOVING = {
    EventType.TRIP_START,
    EventType.TRIP_END,
    EventType.SPEEDING_START,
    EventType.SPEEDING_END,
    EventType.HARSH_ACCEL,
    EventType.HARSH_BRAKE,
    EventType.HARSH_TURN,
    EventType.GEOFENCE_ENTER,
    EventType.GEOFENCE_EXIT,
    EventType.STOP_END,
    EventType.IDLE_END,
}

jump = st.tuples(
    st.floats(-80, 80),  # metres north
    st.floats(-80, 80),  # metres east
    st.floats(0, 4.0),  # Doppler speed, m/s: multipath corrupts it too
    st.floats(0, 359.9),  # course
    st.floats(0.5, 4.0),  # HDOP: multipath can look like a good fix
)


def _parked_samples(
    ignition: bool | None,
    jumps: list[tuple[float, float, float, float, float]],
    *,
    obd: bool = True,
    gnss_hz: float = 1.0,
) -> list[Sample]:
    """A parked van: GPIO ignition on, off or absent; an OBD adapter or none; GNSS noise.

    With the ignition on the ECU reports speed 0 and idle RPM; without any ignition signal it
    reports speed 0 only (so nothing infers the ignition); with the ignition off only the
    adapter's battery voltage answers.
    """
    samples: list[Sample] = [] if ignition is None else [IgnitionSample(0.0, ignition)]
    for k, (dn, de, v, course, hdop) in enumerate(jumps):
        t = k / gnss_hz
        if obd and k % round(gnss_hz) == 0:
            if ignition is False:
                if k % round(30 * gnss_hz) == 0:
                    samples.append(OBDReading(t, voltage_v=12.4))
            else:
                rpm = 780.0 if ignition else None
                samples.append(OBDReading(t, speed_kmh=0.0, rpm=rpm, fuel_rate_lph=0.9))
                samples.append(OBDReading(t + 0.5, speed_kmh=0.0, rpm=rpm))
        samples.append(
            GNSSFix(
                t + 0.2 / gnss_hz,
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t),
                LAT0 + dn / M_PER_DEG,
                LON0 + de / (M_PER_DEG * math.cos(math.radians(LAT0))),
                35.0,
                v,
                course,
                FixMode.FIX_3D,
                FixQuality.GPS,
                6,
                hdop,
            )
        )
    samples.sort(key=lambda s: s.ts_mono)
    return samples


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ignition=st.sampled_from([True, False, None]),
    obd=st.booleans(),
    gnss_hz=st.sampled_from([1.0, 10.0]),
    jumps=st.lists(jump, min_size=20, max_size=400),
)
def test_a_parked_van_under_gnss_noise_makes_no_driving_events(
    ignition: bool | None,
    obd: bool,
    gnss_hz: float,
    jumps: list[tuple[float, float, float, float, float]],
) -> None:
    # Without OBD speed nothing but the fixes themselves can tell this noise from driving.
    events = run(_parked_samples(ignition, jumps, obd=obd, gnss_hz=gnss_hz), fences=FENCES)
    bad = [
        e
        for e in events
        if e.type in DRIVING_OR_MOVING
        and not (e.type == EventType.GEOFENCE_ENTER and e.data.get("initial"))
    ]
    assert not bad


@pytest.mark.parametrize("obd", [False, True])
@pytest.mark.parametrize("ignition", [True, None])
def test_parked_noise_is_ignored_but_a_real_gnss_only_drive_is_not(
    ignition: bool | None, obd: bool
) -> None:
    # The same van parked under that noise for 5 minutes, then driven off with GNSS alone (the
    # adapter unplugged, or none): the noise makes nothing, the drive is seen at once.
    rng = random.Random(6)
    noise = [
        (rng.uniform(-80, 80), rng.uniform(-80, 80), rng.uniform(0, 4), rng.uniform(0, 360), 1.2)
        for _ in range(300)
    ]
    t0 = 300.0
    drive = Drive(obd=False, lat0=LAT0, lon0=LON0).to_speed(40).cruise(60)
    driven = [dataclasses.replace(s, ts_mono=s.ts_mono + t0) for s in drive.samples()]
    samples = _parked_samples(ignition, noise, obd=obd)
    samples += [s for s in driven if isinstance(s, GNSSFix)]
    events = run(samples, config(speeding={"limit_kmh": 30.0}))
    assert not [e for e in events if e.type in DRIVING_OR_MOVING and e.ts_mono < t0]
    # 30 km/h is passed 6.9 s after the start; GNSS movement is confirmed after 3 s and 10 m.
    (speeding,) = of(events, EventType.SPEEDING_START)
    assert t0 + 6.0 <= speeding.ts_mono <= t0 + 8.0
    assert len(of(events, EventType.TRIP_START)) == int(ignition is True)
    if ignition:
        (start,) = of(events, EventType.TRIP_START)
        assert t0 < start.ts_mono < t0 + 6.0


# Stationary blocks sit well away from the 120 s idle, 180 s stop and 300 s trip-split limits.
STATIONARY = st.sampled_from(
    [("idle", 50.0), ("idle", 150.0), ("idle", 250.0), ("off", 30.0), ("off", 400.0)]
)
MOVING = st.tuples(st.sampled_from([30.0, 50.0, 80.0]), st.sampled_from([20.0, 60.0]))
SHAPED = {
    EventType.TRIP_START,
    EventType.TRIP_END,
    EventType.STOP_START,
    EventType.STOP_END,
    EventType.IDLE_START,
    EventType.IDLE_END,
}


def _script(d: Drive, plan: list[tuple[tuple[str, float], tuple[float, float]]]) -> Drive:
    d.ignition(True).park(10)
    for (kind, still_s), (speed, cruise_s) in plan:
        d.to_speed(speed, 1.5).cruise(cruise_s).to_speed(0, 1.5)
        if kind == "idle":
            d.park(still_s)
        else:
            d.park(10).ignition(False).park(still_s).ignition(True).park(10)
    d.to_speed(40, 1.5).cruise(20).to_speed(0, 1.5).park(10).ignition(False).park(400)
    return d


def _shape(events: list[Event]) -> list[tuple[EventType, float]]:
    return sorted((e.type, e.ts_mono) for e in events if e.type in SHAPED)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=st.lists(st.tuples(STATIONARY, MOVING), min_size=1, max_size=4),
    obd=st.booleans(),
)
def test_1hz_and_10hz_give_the_same_trips_stops_and_idles(
    plan: list[tuple[tuple[str, float], tuple[float, float]]], obd: bool
) -> None:
    slow = _shape(run(_script(Drive(gnss_hz=1.0, obd_hz=2.0, obd=obd), plan).samples()))
    fast = _shape(run(_script(Drive(gnss_hz=10.0, obd_hz=10.0, obd=obd), plan).samples()))
    assert [t for t, _ in slow] == [t for t, _ in fast]
    for (_, a), (_, b) in zip(slow, fast, strict=True):
        assert abs(a - b) <= 2.5


times = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, 0.0, 1.0, -1.0, 1e9, float("nan"), float("inf")]),
)
maybe = st.one_of(st.none(), st.floats(-1e4, 1e4), st.sampled_from([float("nan"), float("inf")]))
samples = st.one_of(
    st.builds(IgnitionSample, times, st.booleans(), st.sampled_from(["gpio", "rpm", "voltage"])),
    st.builds(
        OBDReading,
        times,
        speed_kmh=maybe,
        rpm=maybe,
        fuel_level_pct=maybe,
        fuel_rate_lph=maybe,
        voltage_v=maybe,
    ),
    st.builds(
        GNSSFix,
        times,
        st.just(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        st.one_of(st.floats(-90, 90), st.just(float("nan"))),
        st.one_of(st.floats(-180, 180), st.just(float("nan"))),
        maybe,
        maybe,
        st.one_of(st.none(), st.floats(-720, 720), st.just(float("nan"))),
        st.sampled_from(list(FixMode)),
        st.sampled_from([None, *FixQuality]),
        st.one_of(st.none(), st.integers(0, 40)),
        maybe,
    ),
    st.builds(LinkSample, times, st.sampled_from(list(Link)), st.sampled_from(list(LinkState))),
    st.builds(
        DTCSample, times, st.lists(st.sampled_from(["P0301", "P0420", "", "U0100"])).map(tuple)
    ),
)


@settings(max_examples=150, deadline=None)
@given(stream=st.lists(samples, max_size=80), ticks=st.lists(times, max_size=5))
def test_time_running_backwards_or_gaps_never_crash_a_detector(
    stream: list[Sample], ticks: list[float]
) -> None:
    chain = build_detectors(config(), FENCES)
    events: list[Event] = []
    for s in stream:
        events += chain.feed(s)
    for t in ticks:
        events += chain.tick(t)
    events += chain.flush()
    for e in events:
        assert isinstance(e.type, EventType)
        assert math.isfinite(e.ts_mono)


def _stage(name: str) -> Stage:
    chain = build_detectors(config(), FENCES)
    stage: Stage = getattr(chain, name)
    return stage


STAGES = [
    "ignition",
    "link",
    "dtc",
    "supply",
    "geofence",
    "speeding",
    "harsh",
    "idle",
    "stop",
    "trip",
]


@pytest.mark.parametrize("name", STAGES)
@settings(max_examples=60, deadline=None)
@given(stream=st.lists(samples, max_size=60))
def test_each_detector_alone_survives_hostile_time(name: str, stream: list[Sample]) -> None:
    cfg = config()
    motion = MotionTracker(cfg.detect.motion, cfg.detect.ignition)
    stage = _stage(name)
    # The chain drops samples whose time is not finite (counted); stages see the rest, in any
    # order, with any gaps.
    for s in (s for s in stream if math.isfinite(s.ts_mono)):
        motion.update(s)
        for e in stage.feed(s, motion):
            assert isinstance(e.type, EventType)
            assert math.isfinite(e.ts_mono)
