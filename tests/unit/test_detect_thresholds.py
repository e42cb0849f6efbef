"""Every detector threshold, just below and just above its boundary."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import pytest

from agent.detectors import build_detectors
from agent.events import EventType
from agent.geofence import GeofenceSet, parse_geofences
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
from tests.unit.test_detect_drive import Drive, config, of, run

FINE = {"obd_hz": 20.0, "gnss_hz": 10.0, "round_obd": False}


def _cruising(speed_kmh: float, **kw: object) -> Drive:
    d = Drive(**kw)  # type: ignore[arg-type]
    return d.ignition(True).park(5).to_speed(speed_kmh, 1.0).cruise(10)


@pytest.mark.parametrize(("decel", "fires"), [(-2.8, False), (-3.2, True)])
def test_harsh_brake_threshold(decel: float, fires: bool) -> None:
    d = _cruising(60).accel(2.0, decel).cruise(10)
    events = of(run(d.samples()), EventType.HARSH_BRAKE)
    assert len(events) == (1 if fires else 0)
    if fires:
        e = events[0]
        assert abs(e.ts_mono - 31.67) < 1.0  # braking began at 5 + 16.67 + 10 s
        assert e.data["severity"] == 1
        assert len(e.evidence) >= 8
        assert min(p["t_rel_s"] for p in e.evidence) < -4
        assert max(p["t_rel_s"] for p in e.evidence) > 2


@pytest.mark.parametrize(("peak", "severity"), [(-3.5, 1), (-4.5, 2), (-5.5, 3)])
def test_harsh_brake_severity_bands(peak: float, severity: int) -> None:
    d = _cruising(80, **FINE).accel(1.5, peak).cruise(10)
    (e,) = of(run(d.samples(), config(harsh={"accel_window_s": 0.3})), EventType.HARSH_BRAKE)
    assert e.data["severity"] == severity


@pytest.mark.parametrize(("accel", "fires"), [(2.3, False), (2.7, True)])
def test_harsh_accel_threshold(accel: float, fires: bool) -> None:
    d = _cruising(20).accel(2.5, accel).cruise(10)
    assert len(of(run(d.samples()), EventType.HARSH_ACCEL)) == (1 if fires else 0)


@pytest.mark.parametrize(("duration", "fires"), [(0.35, False), (0.75, True)])
def test_harsh_min_duration(duration: float, fires: bool) -> None:
    # A short window and fine sampling so the estimate follows the step closely.
    cfg = config(harsh={"accel_window_s": 0.1})
    d = _cruising(60, **FINE).accel(duration, -5.0).cruise(10)
    assert len(of(run(d.samples(), cfg), EventType.HARSH_BRAKE)) == (1 if fires else 0)


@pytest.mark.parametrize(("speed", "fires"), [(26.0, False), (34.0, True)])
def test_harsh_brake_min_speed(speed: float, fires: bool) -> None:
    cfg = config(harsh={"min_speed_kmh": 30.0, "accel_window_s": 0.3})
    d = _cruising(speed, **FINE).accel(1.0, -4.0).cruise(10)
    assert len(of(run(d.samples(), cfg), EventType.HARSH_BRAKE)) == (1 if fires else 0)


@pytest.mark.parametrize(("speed", "fires"), [(25.0, False), (29.0, True)])
def test_harsh_accel_min_speed(speed: float, fires: bool) -> None:
    # "At >= 30 km/h": at the end of the first estimate window, 0.3 s into a 3.5 m/s^2 push
    # (+1.1 km/h), plus the window's own lag: from 25 km/h it is 28.6, from 29 km/h 31.5.
    cfg = config(harsh={"min_speed_kmh": 30.0, "accel_window_s": 0.3})
    d = _cruising(speed, **FINE).accel(1.0, 3.5).cruise(10)
    assert len(of(run(d.samples(), cfg), EventType.HARSH_ACCEL)) == int(fires)


@pytest.mark.parametrize(
    ("peak", "severity"), [(3.45, 1), (3.55, 2), (4.45, 2), (4.55, 3), (6.0, 3)]
)
def test_harsh_accel_severity_bands(peak: float, severity: int) -> None:
    # One band per m/s^2 above the 2.5 m/s^2 threshold: 2.5 / 3.5 / 4.5.
    d = _cruising(30, **FINE).accel(1.5, peak).cruise(10)
    (e,) = of(run(d.samples(), config(harsh={"accel_window_s": 0.3})), EventType.HARSH_ACCEL)
    assert e.data["peak_mps2"] == pytest.approx(peak, abs=0.02)
    assert e.data["severity"] == severity


@pytest.mark.parametrize(("peak", "severity"), [(-3.95, 1), (-4.05, 2), (-4.95, 2), (-5.05, 3)])
def test_harsh_brake_severity_band_edges(peak: float, severity: int) -> None:
    d = _cruising(80, **FINE).accel(1.5, peak).cruise(10)
    (e,) = of(run(d.samples(), config(harsh={"accel_window_s": 0.3})), EventType.HARSH_BRAKE)
    assert e.data["severity"] == severity


def _turning(speed_kmh: float, lateral_mps2: float, hdop: float = 0.9) -> Drive:
    yaw_dps = math.degrees(lateral_mps2 / (speed_kmh / 3.6))
    return _cruising(speed_kmh, hdop=hdop).turn(4.0, yaw_dps).cruise(10)


@pytest.mark.parametrize(("lateral", "fires"), [(2.8, False), (3.2, True)])
def test_harsh_turn_threshold(lateral: float, fires: bool) -> None:
    events = of(run(_turning(50, lateral).samples()), EventType.HARSH_TURN)
    assert len(events) == (1 if fires else 0)


@pytest.mark.parametrize(
    ("lateral", "severity"), [(3.95, 1), (4.05, 2), (4.95, 2), (5.05, 3), (7.0, 3)]
)
def test_harsh_turn_severity_bands(lateral: float, severity: int) -> None:
    # Same spacing as acceleration: 3 / 4 / 5 m/s^2.
    (e,) = of(run(_turning(50, lateral).samples()), EventType.HARSH_TURN)
    assert e.data["peak_mps2"] == pytest.approx(lateral, abs=0.02)
    assert e.data["severity"] == severity


@pytest.mark.parametrize(("span_s", "fires"), [(0.1, True), (0.2, False)])
def test_heading_rate_span_averages_course_noise(span_s: float, fires: bool) -> None:
    # Straight at 50 km/h with 10 Hz fixes whose course alternates +-1 degree: over one epoch
    # that reads as 4.8 m/s^2 of lateral acceleration, over two epochs as none.
    cfg = config(harsh={"turn_min_span_s": span_s, "accel_window_s": 0.05})
    d = _cruising(50, gnss_hz=10.0)
    noisy_from = d.now
    d.cruise(3).cruise(10)
    samples = [
        dataclasses.replace(s, course_deg=90.0 + (1.0 if round(s.ts_mono * 10) % 2 else -1.0))
        if isinstance(s, GNSSFix) and noisy_from <= s.ts_mono < noisy_from + 3.0
        else s
        for s in d.samples()
    ]
    assert bool(of(run(samples, cfg), EventType.HARSH_TURN)) == fires


@pytest.mark.parametrize(("speed", "fires"), [(28.0, False), (32.0, True)])
def test_harsh_turn_min_speed(speed: float, fires: bool) -> None:
    assert len(of(run(_turning(speed, 4.0).samples()), EventType.HARSH_TURN)) == int(fires)


@pytest.mark.parametrize(("hdop", "fires"), [(2.1, False), (1.9, True)])
def test_harsh_turn_needs_a_good_fix(hdop: float, fires: bool) -> None:
    events = of(run(_turning(50, 4.0, hdop=hdop).samples()), EventType.HARSH_TURN)
    assert len(events) == int(fires)


@pytest.mark.parametrize(("speed", "fires"), [(99.0, False), (101.5, True)])
def test_speeding_limit(speed: float, fires: bool) -> None:
    d = _cruising(speed, round_obd=False).cruise(30).to_speed(60, 1.0).cruise(10)
    events = run(d.samples())
    assert len(of(events, EventType.SPEEDING_START)) == int(fires)
    assert len(of(events, EventType.SPEEDING_END)) == int(fires)


@pytest.mark.parametrize(("hold_s", "fires"), [(6.5, False), (8.5, True)])
def test_speeding_min_duration(hold_s: float, fires: bool) -> None:
    # Above 100 km/h for hold_s plus 1.4 s on each ramp: 9.3 s and 11.3 s.
    d = _cruising(90).to_speed(110, 2.0).cruise(hold_s).to_speed(90, 2.0).cruise(20)
    events = run(d.samples())
    assert len(of(events, EventType.SPEEDING_START)) == int(fires)


@pytest.mark.parametrize(("after", "ends"), [(96.0, False), (94.0, True)])
def test_speeding_ends_below_limit_minus_hysteresis(after: float, ends: bool) -> None:
    d = _cruising(110, round_obd=False).cruise(20).to_speed(after, 1.0).cruise(30)
    events = run(d.samples())
    assert len(of(events, EventType.SPEEDING_START)) == 1
    ends_now = [e for e in of(events, EventType.SPEEDING_END) if e.ts_mono < d.now]
    assert len(ends_now) == int(ends)
    if ends:
        assert ends_now[0].data["max_speed_kmh"] >= 109.5
        assert ends_now[0].data["duration_s"] > 20


def test_geofence_speed_limit_applies_inside_the_fence() -> None:
    fences = parse_geofences(
        {
            "type": "Feature",
            "properties": {"id": "school", "radius_m": 5000, "speed_limit_kmh": 30},
            "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
        }
    )
    d = _cruising(40).cruise(30)
    assert len(of(run(d.samples(), fences=fences), EventType.SPEEDING_START)) == 1
    assert not of(run(d.samples()), EventType.SPEEDING_START)


@pytest.mark.parametrize(("idle_s", "fires"), [(118.0, False), (122.0, True)])
def test_idle_min_duration(idle_s: float, fires: bool) -> None:
    d = Drive().ignition(True).park(idle_s).to_speed(30).cruise(30)
    events = run(d.samples())
    assert len(of(events, EventType.IDLE_START)) == int(fires)
    if fires:
        (end,) = of(events, EventType.IDLE_END)
        assert end.data["fuel_used_l"] == pytest.approx(idle_s / 3600.0, rel=0.05)


@pytest.mark.parametrize(("move_s", "ends"), [(8.0, False), (12.0, True)])
def test_idle_ends_after_moving_long_enough(move_s: float, ends: bool) -> None:
    d = Drive(round_obd=False).ignition(True).park(150)
    d.to_speed(8, 2.0).cruise(move_s - 2.2).to_speed(0, 2.0).park(30)
    events = run(d.samples())
    idle_ends = [e for e in of(events, EventType.IDLE_END) if e.ts_mono < d.now]
    assert len(idle_ends) == int(ends)


@pytest.mark.parametrize(("stop_s", "fires"), [(178.0, False), (182.0, True)])
def test_stop_min_duration(stop_s: float, fires: bool) -> None:
    d = _cruising(40).to_speed(0, 2.0).park(stop_s).to_speed(40).cruise(20)
    events = run(d.samples())
    stops = [e for e in of(events, EventType.STOP_START) if e.ts_mono > 10]
    assert len(stops) == int(fires)
    if fires:
        (end,) = [e for e in of(events, EventType.STOP_END) if e.ts_mono > 10]
        assert end.data["dwell_s"] == pytest.approx(stop_s, abs=1.5)


@pytest.mark.parametrize(("off_s", "ends"), [(58.0, False), (62.0, True)])
def test_trip_end_needs_ignition_off_long_enough(off_s: float, ends: bool) -> None:
    d = _cruising(40).cruise(30).to_speed(0, 2.0).park(300).ignition(False).park(off_s)
    d.ignition(True).park(5).to_speed(40).cruise(30)
    events = [e for e in run(d.samples()) if e.ts_mono < d.now - 1]
    assert len(of(events, EventType.TRIP_END)) == int(ends)
    assert len(of(events, EventType.TRIP_START)) == 1 + int(ends)


@pytest.mark.parametrize(("still_s", "ends"), [(290.0, False), (310.0, True)])
def test_trip_end_needs_a_long_enough_standstill(still_s: float, ends: bool) -> None:
    d = _cruising(40).cruise(30).to_speed(0, 2.0).park(10).ignition(False).park(still_s - 10)
    d.ignition(True).park(0.1).to_speed(40).cruise(30)
    events = [e for e in run(d.samples()) if e.ts_mono < d.now - 1]
    assert len(of(events, EventType.TRIP_END)) == int(ends)


@pytest.mark.parametrize(("speed", "fires"), [(4.0, False), (6.5, True)])
def test_trip_start_speed(speed: float, fires: bool) -> None:
    d = Drive(round_obd=False).ignition(True).park(5).to_speed(speed, 1.0).cruise(40)
    assert len(of(run(d.samples()), EventType.TRIP_START)) == int(fires)


@pytest.mark.parametrize(("metres", "fires"), [(180.0, False), (220.0, True)])
def test_trip_start_distance_without_speed(metres: float, fires: bool) -> None:
    # No OBD and no Doppler speed: only displacement can start the trip.
    d = Drive(obd=False).ignition(True).park(5).to_speed(3.6, 1.0).cruise(metres - 0.5).park(10)
    samples = [
        dataclasses.replace(s, speed_mps=None) if isinstance(s, GNSSFix) else s for s in d.samples()
    ]
    assert len(of(run(samples), EventType.TRIP_START)) == int(fires)


def _fix(t: float, lat: float = 52.5, lon: float = 13.4, hdop: float = 0.9) -> GNSSFix:
    return GNSSFix(
        t,
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t),
        lat,
        lon,
        30.0,
        0.0,
        0.0,
        FixMode.FIX_3D,
        FixQuality.GPS,
        8,
        hdop,
    )


@pytest.mark.parametrize(("outage_s", "fires"), [(9.0, False), (11.0, True)])
def test_link_lost_duration(outage_s: float, fires: bool) -> None:
    samples: list[Sample] = [_fix(0.0), LinkSample(1.0, Link.GNSS, LinkState.NO_FIX, "tunnel")]
    samples += [OBDReading(1.0 + k * 0.5, speed_kmh=50.0, rpm=1500.0) for k in range(40)]
    samples.append(_fix(1.0 + outage_s))
    samples.sort(key=lambda s: s.ts_mono)
    events = run(samples)
    lost = of(events, EventType.GNSS_LOST)
    assert len(lost) == int(fires)
    assert len(of(events, EventType.GNSS_REGAINED)) == int(fires)
    if fires:
        assert lost[0].ts_mono == 1.0


def test_obd_link_lost_and_regained() -> None:
    samples: list[Sample] = [
        IgnitionSample(0.0, True),
        OBDReading(0.5, speed_kmh=0.0, rpm=800.0),
        LinkSample(2.0, Link.OBD, LinkState.DOWN, "adapter unplugged"),
        *[_fix(2.0 + k) for k in range(30)],
        LinkSample(31.0, Link.OBD, LinkState.UP, ""),
    ]
    events = run(samples)
    assert [e.ts_mono for e in of(events, EventType.OBD_LOST)] == [2.0]
    assert [e.ts_mono for e in of(events, EventType.OBD_REGAINED)] == [31.0]


@pytest.mark.parametrize(("level", "fires"), [(10.5, False), (9.5, True)])
def test_low_fuel_level(level: float, fires: bool) -> None:
    samples = [OBDReading(t, fuel_level_pct=level) for t in range(0, 60, 10)]
    events = of(run(samples), EventType.LOW_FUEL)
    assert len(events) == int(fires)
    if fires:
        assert events[0].ts_mono == 0.0


@pytest.mark.parametrize(
    ("volts", "hold_s", "fires"), [(12.35, 300, False), (12.25, 170, False), (12.25, 190, True)]
)
def test_low_battery_voltage_and_duration(volts: float, hold_s: int, fires: bool) -> None:
    samples: list[Sample] = [IgnitionSample(0.0, False)]
    samples += [OBDReading(float(t), voltage_v=volts) for t in range(0, hold_s + 1, 10)]
    assert len(of(run(samples), EventType.LOW_BATTERY)) == int(fires)


def test_low_battery_not_while_the_engine_runs() -> None:
    samples: list[Sample] = [IgnitionSample(0.0, True)]
    samples += [OBDReading(float(t), voltage_v=12.0, rpm=800.0) for t in range(0, 400, 10)]
    assert not of(run(samples), EventType.LOW_BATTERY)


def test_dtc_set_and_cleared_once_per_change() -> None:
    samples = [
        DTCSample(0.0, ()),
        DTCSample(60.0, ("P0301",)),
        DTCSample(120.0, ("P0301", "P0420")),
        DTCSample(180.0, ("P0420",)),
        DTCSample(240.0, ()),
    ]
    events = run(samples)
    assert [(e.ts_mono, e.data["codes"]) for e in of(events, EventType.DTC_SET)] == [
        (60.0, ["P0301"]),
        (120.0, ["P0420"]),
    ]
    assert [(e.ts_mono, e.data["codes"]) for e in of(events, EventType.DTC_CLEARED)] == [
        (180.0, ["P0301"]),
        (240.0, ["P0420"]),
    ]


@pytest.mark.parametrize(("inside_fixes", "fires"), [(2, False), (3, True)])
def test_geofence_needs_consecutive_fixes(inside_fixes: int, fires: bool) -> None:
    fences = parse_geofences(
        {
            "type": "Feature",
            "properties": {"id": "depot", "radius_m": 50},
            "geometry": {"type": "Point", "coordinates": [13.41, 52.5]},
        }
    )
    chain = build_detectors(config(), fences)
    found = []
    lon_out, lon_in = 13.4085, 13.41  # 100 m apart
    t = 0.0
    seq = [lon_out] * 5 + [lon_in] * inside_fixes + [lon_out] * 5
    for lon in seq:
        # Fake a van that teleports: OBD says it moves, fixes jump with Doppler speed to match.
        found += chain.feed(IgnitionSample(t, True)) if t == 0 else []
        found += chain.feed(OBDReading(t, speed_kmh=50.0, rpm=1500.0))
        fix = dataclasses.replace(_fix(t, lon=lon), speed_mps=100.0)
        found += chain.feed(fix)
        t += 1.0
    assert len(of(found, EventType.GEOFENCE_ENTER)) == int(fires)


@pytest.mark.parametrize(("inside_fixes", "fires"), [(20, False), (22, True)])
def test_geofence_fixes_must_span_confirm_s(inside_fixes: int, fires: bool) -> None:
    # At 10 Hz three fixes are 0.2 s of receiver noise: the side changes only when the fixes
    # on it span 2 s (1.9 s or 2.1 s here), as three fixes do at 1 Hz.
    fences = parse_geofences(
        {
            "type": "Feature",
            "properties": {"id": "depot", "radius_m": 50},
            "geometry": {"type": "Point", "coordinates": [13.41, 52.5]},
        }
    )
    chain = build_detectors(config(), fences)
    metres = 111_195 * math.cos(math.radians(52.5))
    lon_out, lon_in = 13.41 - 60 / metres, 13.41 - 40 / metres
    found = chain.feed(IgnitionSample(0.0, True))
    for k, lon in enumerate([lon_out] * 30 + [lon_in] * inside_fixes + [lon_out] * 30):
        t = k / 10
        found += chain.feed(OBDReading(t, speed_kmh=50.0, rpm=1500.0))
        found += chain.feed(_fix(t, lon=lon))
    assert len(of(found, EventType.GEOFENCE_ENTER)) == int(fires)


def test_geofence_enter_and_exit_with_interpolated_times() -> None:
    fences = parse_geofences(
        {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "properties": {"id": "yard", "name": "Yard"},
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [
                            [
                                [13.401, 52.499],
                                [13.403, 52.499],
                                [13.403, 52.501],
                                [13.401, 52.501],
                                [13.401, 52.499],
                            ]
                        ],
                    },
                }
            ],
        }
    )
    d = _cruising(36).cruise(60)  # 10 m/s east from lon 13.4
    events = run(d.samples(), fences=fences)
    (enter,) = of(events, EventType.GEOFENCE_ENTER)
    (exit_,) = of(events, EventType.GEOFENCE_EXIT)
    # The yard is 0.002 degrees of longitude wide: 135.4 m at 52.5 N, 13.5 s at 10 m/s.
    fixes = [s for s in d.samples() if isinstance(s, GNSSFix)]
    t_in = next(f.ts_mono for f in fixes if f.lon >= 13.401)
    assert t_in - 1.0 <= enter.ts_mono <= t_in
    assert exit_.ts_mono - enter.ts_mono == pytest.approx(13.54, abs=0.3)
    assert enter.data["geofence_id"] == "yard"


def test_geofence_pass_through_between_two_fixes() -> None:
    d = _cruising(90).cruise(30)  # 25 m/s: a 20 m circle fits between two 1 Hz fixes
    fixes = [s for s in d.samples() if isinstance(s, GNSSFix)]
    a, b = fixes[-10], fixes[-9]
    centre = [(a.lon + b.lon) / 2, 52.5]
    fences = parse_geofences(
        {
            "type": "Feature",
            "properties": {"id": "gate", "radius_m": 10},
            "geometry": {"type": "Point", "coordinates": centre},
        }
    )
    events = run(d.samples(), fences=fences)
    (enter,) = of(events, EventType.GEOFENCE_ENTER)
    (exit_,) = of(events, EventType.GEOFENCE_EXIT)
    assert a.ts_mono < enter.ts_mono < exit_.ts_mono < b.ts_mono
    assert enter.data["pass_through"] is True


@pytest.mark.parametrize(("between", "events"), [(14.5, 1), (15.5, 2)])
def test_low_fuel_rearms_at_low_fuel_rearm_pct(between: float, events: int) -> None:
    levels = [9.0, 9.0, 9.0, between, 9.0, 9.0, 9.0]
    samples = [OBDReading(k * 20.0, fuel_level_pct=v) for k, v in enumerate(levels)]
    assert len(of(run(samples), EventType.LOW_FUEL)) == events


@pytest.mark.parametrize(("between", "events"), [(12.55, 1), (12.65, 2)])
def test_low_battery_rearms_above_low_battery_rearm_v(between: float, events: int) -> None:
    samples: list[Sample] = [IgnitionSample(0.0, False)]
    volts = [12.2] * 20 + [between] + [12.2] * 20  # 10 s apart: 190 s low, a reading, 190 s
    samples += [OBDReading(k * 10.0, voltage_v=v) for k, v in enumerate(volts)]
    assert len(of(run(samples), EventType.LOW_BATTERY)) == events


@pytest.mark.parametrize(("max_segment_s", "joined"), [(0.9, False), (1.1, True)])
def test_geofence_segments_join_fixes_up_to_max_segment_s(
    max_segment_s: float, joined: bool
) -> None:
    # A 20 m circle between two 1 Hz fixes 25 m apart: seen only on the segment.
    d = _cruising(90).cruise(30)
    fixes = [s for s in d.samples() if isinstance(s, GNSSFix)]
    a, b = fixes[-10], fixes[-9]
    fences = parse_geofences(
        {
            "type": "Feature",
            "properties": {"id": "gate", "radius_m": 10},
            "geometry": {"type": "Point", "coordinates": [(a.lon + b.lon) / 2, 52.5]},
        }
    )
    cfg = config(geofence={"max_segment_s": max_segment_s})
    events = run(d.samples(), cfg, fences=fences)
    assert len(of(events, EventType.GEOFENCE_ENTER, EventType.GEOFENCE_EXIT)) == 2 * int(joined)


@pytest.mark.parametrize(
    ("volts", "hold_s", "on"), [(13.1, 10.0, False), (13.3, 2.5, False), (13.3, 3.5, True)]
)
def test_ignition_voltage_fallback(volts: float, hold_s: float, on: bool) -> None:
    samples = [OBDReading(0.0, voltage_v=12.5)]
    samples += [OBDReading(1.0 + k * 0.5, voltage_v=volts) for k in range(int(hold_s / 0.5) + 1)]
    events = of(run(samples), EventType.IGNITION_ON)
    assert len(events) == int(on)
    if on:
        assert events[0].ts_mono == 1.0
        assert events[0].data["source"] == "voltage"


def test_ignition_rpm_fallback_without_gpio() -> None:
    samples = [OBDReading(t, rpm=0.0) for t in (0.0, 1.0)]
    samples += [OBDReading(t, rpm=800.0) for t in (2.0, 3.0)]
    samples += [OBDReading(t, rpm=0.0) for t in (4.0, 5.0)]
    events = run(samples)
    assert [
        (e.type, e.ts_mono) for e in of(events, EventType.IGNITION_ON, EventType.IGNITION_OFF)
    ] == [
        (EventType.IGNITION_ON, 2.0),
        (EventType.IGNITION_OFF, 4.0),
    ]


def test_gpio_ignition_outranks_rpm() -> None:
    samples: list[Sample] = [
        IgnitionSample(0.0, False),
        OBDReading(1.0, rpm=900.0),
        OBDReading(2.0, rpm=900.0),
    ]
    assert not of(run(samples), EventType.IGNITION_ON)


@pytest.mark.parametrize(("hdop", "trips"), [(5.5, False), (4.5, True)])
def test_gnss_speed_needs_a_good_enough_fix(hdop: float, trips: bool) -> None:
    d = Drive(obd=False, hdop=hdop).ignition(True).park(5).to_speed(20, 1.0).cruise(15)
    assert len(of(run(d.samples()), EventType.TRIP_START)) == int(trips)


@pytest.mark.parametrize(("age_s", "source"), [(2.0, "obd"), (3.0, "gnss")])
def test_stale_obd_speed_falls_back_to_gnss(age_s: float, source: str) -> None:
    chain = build_detectors(config(), GeofenceSet())
    chain.feed(IgnitionSample(0.0, True))
    chain.feed(OBDReading(1.0, speed_kmh=40.0, rpm=1500.0))
    chain.feed(dataclasses.replace(_fix(1.0 + age_s), speed_mps=5.0))
    assert chain.motion.speed_source == source


@pytest.mark.parametrize(("jump_m", "accepted"), [(25.0, True), (40.0, False)])
def test_multipath_jump_gate(jump_m: float, accepted: bool) -> None:
    chain = build_detectors(config(), GeofenceSet())
    chain.feed(IgnitionSample(0.0, False))
    chain.feed(_fix(1.0))
    jumped = _fix(2.0, lat=52.5 + jump_m / 111_195)
    chain.feed(jumped)
    assert (chain.motion.fix is jumped) == accepted


@pytest.mark.parametrize(("low_s", "fires"), [(15.0, False), (25.0, True)])
def test_low_fuel_needs_to_stay_low(low_s: float, fires: bool) -> None:
    samples = [OBDReading(0.0, fuel_level_pct=9.0), OBDReading(low_s, fuel_level_pct=9.0)]
    samples.append(OBDReading(low_s + 5.0, fuel_level_pct=11.0))
    assert len(of(run(samples), EventType.LOW_FUEL)) == int(fires)


def test_low_fuel_once_until_refuelled() -> None:
    levels = [9.0, 9.0, 9.0, 12.0, 9.0, 9.0, 9.0, 40.0, 9.0, 9.0, 9.0]
    samples = [OBDReading(k * 20.0, fuel_level_pct=v) for k, v in enumerate(levels)]
    assert [e.ts_mono for e in of(run(samples), EventType.LOW_FUEL)] == [0.0, 160.0]


@pytest.mark.parametrize(("creep_s", "ends"), [(2.0, False), (4.5, True)])
def test_stop_ends_only_after_moving_long_enough(creep_s: float, ends: bool) -> None:
    d = _cruising(30).to_speed(0, 2.0).park(200)
    d.to_speed(10, 2.0).cruise(creep_s - 1.4).to_speed(0, 2.0).park(60)
    events = [e for e in of(run(d.samples()), EventType.STOP_END) if e.ts_mono < d.now - 1]
    assert len(events) == int(ends)
