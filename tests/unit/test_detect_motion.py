"""The motion tracker's gates, each just below and just above its boundary.

GNSS-only movement must be physically consistent before it counts (``gnss_confirm_s``,
``gnss_confirm_m``, ``gnss_tolerance_*``, ``gnss_course_tolerance_deg``, ``max_accel_mps2``);
positions are gated by speed while moving (``jump_speed_factor``, ``reanchor_*``) and held at the
standstill's place while standing; a parked van never changes side of a geofence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest

from agent.detectors import DetectorChain, build_detectors
from agent.events import Event, EventType
from agent.geofence import GeofenceSet, parse_geofences
from drivers.samples import (
    DTCSample,
    FixMode,
    FixQuality,
    GNSSFix,
    IgnitionSample,
    OBDReading,
    Sample,
)
from tests.unit.test_detect_drive import M_PER_DEG, config, of

LAT0, LON0 = 52.5, 13.4
M_PER_DEG_LON = M_PER_DEG * math.cos(math.radians(LAT0))


def _fix(
    t: float,
    east_m: float = 0.0,
    north_m: float = 0.0,
    speed_mps: float | None = 0.0,
    course_deg: float | None = 90.0,
    hdop: float = 0.9,
) -> GNSSFix:
    return GNSSFix(
        t,
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t),
        LAT0 + north_m / M_PER_DEG,
        LON0 + east_m / M_PER_DEG_LON,
        30.0,
        speed_mps,
        course_deg,
        FixMode.FIX_3D,
        FixQuality.GPS,
        8,
        hdop,
    )


def _east(
    until_s: float,
    speed_mps: float,
    *,
    hz: float = 10.0,
    doppler_mps: float | None = None,
    course_deg: float = 90.0,
) -> list[GNSSFix]:
    """Fixes of a van driving east at ``speed_mps`` from t = 0, reporting ``doppler_mps``."""
    n = round(until_s * hz)
    reported = speed_mps if doppler_mps is None else doppler_mps
    return [
        _fix(k / hz, east_m=speed_mps * k / hz, speed_mps=reported, course_deg=course_deg)
        for k in range(n + 1)
    ]


def _chain(fences: GeofenceSet | None = None) -> DetectorChain:
    return build_detectors(config(), fences or GeofenceSet())


def _feed(chain: DetectorChain, samples: list[Sample]) -> list[Event]:
    events: list[Event] = []
    for s in sorted(samples, key=lambda s: s.ts_mono):
        events += chain.feed(s)
    return events


def _gnss_moving(samples: list[Sample]) -> bool:
    chain = _chain()
    _feed(chain, samples)
    speed = chain.motion.speed_kmh
    return speed is not None and speed > 5.0


# -- GNSS-only movement ------------------------------------------------------------------------


@pytest.mark.parametrize(("until_s", "moving"), [(2.9, False), (3.1, True)])
def test_gnss_movement_counts_after_gnss_confirm_s(until_s: float, moving: bool) -> None:
    assert _gnss_moving(list(_east(until_s, 5.0))) == moving


@pytest.mark.parametrize(("until_s", "moving"), [(4.8, False), (5.2, True)])
def test_gnss_movement_counts_after_gnss_confirm_m(until_s: float, moving: bool) -> None:
    # 2 m/s: 3 s are not 10 m; 9.6 m after 4.8 s, 10.4 m after 5.2 s.
    assert _gnss_moving(list(_east(until_s, 2.0))) == moving


@pytest.mark.parametrize(("doppler", "moving"), [(9.0, True), (10.0, False)])
def test_gnss_displacement_must_match_the_doppler_speed(doppler: float, moving: bool) -> None:
    # 15 m moved in 3 s against 27 m (or 30 m) of Doppler speed: 12 m apart is within the
    # 5 m + 30 % tolerance (13.1 m), 15 m is not (14 m).
    assert _gnss_moving(list(_east(6.0, 5.0, doppler_mps=doppler))) == moving


@pytest.mark.parametrize(("course", "moving"), [(125.0, True), (130.0, False)])
def test_gnss_dead_reckoning_must_land_where_the_fixes_went(course: float, moving: bool) -> None:
    # 15 m east in 3 s, reported 35 or 40 degrees off: dead reckoning misses by 9.0 m or
    # 10.3 m against the 9.5 m tolerance.
    assert _gnss_moving(list(_east(6.0, 5.0, course_deg=course))) == moving


@pytest.mark.parametrize(("swing", "moving"), [(22.0, True), (23.0, False)])
def test_gnss_course_changes_at_most_the_course_tolerance(swing: float, moving: bool) -> None:
    # Straight east at 1 Hz, the course swinging 44 or 46 degrees from fix to fix.
    fixes = [
        dataclasses.replace(f, course_deg=90.0 + (swing if k % 2 else -swing))
        for k, f in enumerate(_east(6.0, 5.0, hz=1.0))
    ]
    assert _gnss_moving(list(fixes)) == moving


@pytest.mark.parametrize(("speed_after", "accepted"), [(14.5, True), (15.5, False)])
def test_gnss_speed_changes_beyond_max_accel_are_multipath(
    speed_after: float, accepted: bool
) -> None:
    chain = _chain()
    fixes = _east(5.0, 5.0, hz=1.0)
    _feed(chain, list(fixes))
    assert chain.motion.speed_kmh == pytest.approx(18.0)
    # One second later, at a speed 9.5 or 10.5 m/s higher, exactly where that speed puts it.
    last = fixes[-1]
    east_m = 25.0 + (5.0 + speed_after) / 2
    jumped = _fix(last.ts_mono + 1.0, east_m=east_m, speed_mps=speed_after)
    chain.feed(jumped)
    assert (chain.motion.fix is jumped) == accepted
    assert chain.motion.speed_kmh == pytest.approx(speed_after * 3.6 if accepted else 18.0)


@pytest.mark.parametrize("use_estimated", [False, True])
def test_dead_reckoning_fixes_drive_nothing_unless_allowed(use_estimated: bool) -> None:
    # A receiver extrapolating (GGA quality 6): the same drive, every fix marked estimated.
    fixes = [dataclasses.replace(f, quality=FixQuality.ESTIMATED) for f in _east(6.0, 5.0)]
    chain = build_detectors(
        config(motion={"use_estimated_fixes": use_estimated}), GeofenceSet()
    )
    _feed(chain, list(fixes))
    speed = chain.motion.speed_kmh
    assert (speed is not None and speed > 5.0) == use_estimated
    assert (chain.motion.fix is fixes[-1]) == use_estimated
    # Measured fixes of the same drive move it with the default configuration.
    assert _gnss_moving(list(_east(6.0, 5.0)))


@pytest.mark.parametrize(("age_s", "source"), [(2.4, "gnss"), (2.6, None)])
def test_gnss_speed_goes_stale_after_gnss_speed_max_age_s(age_s: float, source: str | None) -> None:
    chain = _chain()
    chain.feed(_fix(1.0))
    assert chain.motion.speed_source == "gnss"
    chain.feed(DTCSample(1.0 + age_s, ()))
    assert chain.motion.speed_source == source


@pytest.mark.parametrize(("age_s", "running"), [(4.9, False), (5.1, True)])
def test_a_stalled_engine_counts_until_rpm_max_age_s(age_s: float, running: bool) -> None:
    # RPM 0 with the ignition on: stalled, until the reading is too old to say so.
    chain = _chain()
    chain.feed(IgnitionSample(0.0, True))
    chain.feed(OBDReading(0.0, rpm=0.0))
    chain.feed(DTCSample(age_s, ()))
    assert chain.motion.engine_running() == running


# -- position gates while moving ---------------------------------------------------------------


def _driving_at_36_kmh(until_s: float) -> list[Sample]:
    return [OBDReading(k / 2, speed_kmh=36.0, rpm=1500.0) for k in range(round(until_s * 2) + 1)]


@pytest.mark.parametrize(("jump_m", "accepted"), [(44.0, True), (46.0, False)])
def test_jump_gate_allows_speed_times_factor_plus_max_jump(jump_m: float, accepted: bool) -> None:
    # 10 m/s for 1 s, times 1.5, plus 30 m: 45 m.
    chain = _chain()
    jumped = _fix(2.0, east_m=jump_m)
    _feed(chain, [*_driving_at_36_kmh(2.0), _fix(1.0), jumped])
    assert (chain.motion.fix is jumped) == accepted


@pytest.mark.parametrize(("far_fixes", "reanchored"), [(5, False), (6, True)])
def test_a_run_of_rejections_reanchors(far_fixes: int, reanchored: bool) -> None:
    chain = _chain()
    far = [_fix(2.0 + k * 0.2, east_m=500.0) for k in range(far_fixes)]
    _feed(chain, [*_driving_at_36_kmh(4.0), _fix(1.0), *far])
    assert (chain.motion.fix is far[-1]) == reanchored


@pytest.mark.parametrize(("gap_s", "reanchored"), [(9.5, False), (10.5, True)])
def test_a_gap_reanchors(gap_s: float, reanchored: bool) -> None:
    chain = _chain()
    far = _fix(1.0 + gap_s, east_m=1000.0)
    _feed(chain, [*_driving_at_36_kmh(12.0), _fix(1.0), far])
    assert (chain.motion.fix is far) == reanchored


@pytest.mark.parametrize(("hold_s", "starts"), [(1.5, False), (2.5, True)])
def test_trip_start_speed_must_hold_start_confirm_s(hold_s: float, starts: bool) -> None:
    samples: list[Sample] = [IgnitionSample(0.0, True)]
    for k in range(40):
        t = k / 2
        moving = 1.0 <= t <= 1.0 + hold_s
        samples.append(OBDReading(t, speed_kmh=10.0 if moving else 0.0, rpm=900.0))
    assert len(of(_feed(_chain(), samples), EventType.TRIP_START)) == int(starts)


# -- standing: the van is where it stopped -----------------------------------------------------

# A 50 m circle whose edge runs 5 m east of where the van parks.
EDGE = parse_geofences(
    {
        "type": "Feature",
        "properties": {"id": "yard", "radius_m": 50},
        "geometry": {"type": "Point", "coordinates": [LON0 + 55 / M_PER_DEG_LON, LAT0]},
    }
)


@pytest.mark.parametrize("obd", [True, False])
def test_a_parked_van_near_a_boundary_never_flips_under_a_sustained_jump(obd: bool) -> None:
    # Multipath off a wall can hold a fix 30-80 m off for many epochs, with a Doppler speed.
    samples: list[Sample] = [IgnitionSample(0.0, True)]
    for k in range(300):
        t = float(k)
        if obd:
            samples.append(OBDReading(t, speed_kmh=0.0, rpm=800.0))
        thrown = 60 <= k < 120 or 200 <= k < 203
        east_m, speed = (35.0 + (k % 7), 2.5) if thrown else (0.5 * (k % 3), 0.05)
        samples.append(_fix(t + 0.2, east_m=east_m, speed_mps=speed, course_deg=(k * 137) % 360))
    events = _feed(_chain(EDGE), samples)
    assert not of(events, EventType.GEOFENCE_ENTER, EventType.GEOFENCE_EXIT, EventType.TRIP_START)


@pytest.mark.parametrize("obd", [True, False])
def test_a_van_that_stops_just_past_a_boundary_completes_its_crossing(obd: bool) -> None:
    # East at 5 m/s from 25.5 m west of the parking spot: the last fix while moving (t = 6) is
    # 0.5 m short of the edge, and the van comes to rest 2.5 m past it. Every fix inside the
    # fence is taken standing still; the standstill's place is inside.
    samples: list[Sample] = [IgnitionSample(0.0, True)]
    for k in range(7):
        samples.append(_fix(float(k), east_m=5.0 * k - 25.5, speed_mps=5.0))
        if obd:
            samples.append(OBDReading(float(k), speed_kmh=18.0, rpm=1200.0))
    for k in range(7, 70):
        if obd:
            samples.append(OBDReading(float(k), speed_kmh=0.0, rpm=800.0))
        samples.append(_fix(k + 0.2, east_m=7.5, speed_mps=0.05, course_deg=(k * 137) % 360))
    events = _feed(_chain(EDGE), samples)
    (enter,) = of(events, EventType.GEOFENCE_ENTER)
    assert not enter.data.get("initial")
    assert 6.0 <= enter.ts_mono <= 7.2
    assert not of(events, EventType.GEOFENCE_EXIT)
