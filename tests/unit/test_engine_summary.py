"""Engine summaries: windows, fuel integration, idle time, early closes, hostile time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.engine import EngineSummarizer, EngineSummary
from drivers.samples import (
    FuelRateSource,
    IgnitionSample,
    Link,
    LinkSample,
    LinkState,
    OBDReading,
)


def reading(t: float, **values: float) -> OBDReading:
    return OBDReading(ts_mono=t, **values)  # type: ignore[arg-type]


def feed_all(s: EngineSummarizer, samples: list[OBDReading]) -> list[EngineSummary]:
    out: list[EngineSummary] = []
    for r in samples:
        out += s.feed(r)
    return out


def test_one_summary_per_interval_with_averages_maxima_and_newest_values() -> None:
    s = EngineSummarizer(60.0)
    samples = [
        reading(t, rpm=800.0 + t, speed_kmh=30.0, fuel_rate_lph=3.6, coolant_c=80.0 + t / 10)
        for t in range(0, 125)
    ]
    out = feed_all(s, samples)
    assert [o.ts_mono for o in out] == [60.0, 120.0]
    first = out[0].data
    assert first["window_s"] == 60.0 and first["readings"] == 60
    assert first["rpm_avg"] == pytest.approx(800 + 29.5, abs=0.05)
    assert first["rpm_max"] == 859.0
    assert first["coolant_c"] == pytest.approx(85.9)
    # 3.6 L/h for 60 s is 0.06 L.
    assert first["fuel_used_l"] == pytest.approx(0.06, abs=1e-6)
    assert first["idle_s"] == 0.0
    rest = s.flush()
    assert len(rest) == 1 and rest[0].data["readings"] == 5
    assert s.flush() == []


def test_idle_time_counts_engine_running_while_standing() -> None:
    s = EngineSummarizer(300.0)
    samples = [reading(float(t), rpm=750.0, speed_kmh=0.0, fuel_rate_lph=1.0) for t in range(31)]
    samples += [reading(30.0 + t, rpm=1500.0, speed_kmh=40.0) for t in range(1, 11)]
    feed_all(s, samples)
    (summary,) = s.flush()
    assert summary.data["idle_s"] == pytest.approx(30.0 + 1.0)  # the step out of the idle too
    # The fuel rate is polled less often than speed and RPM: each rate holds until the next
    # one, for at most max_step_s (10 s) after the last reading of it at t = 30.
    assert summary.data["fuel_used_l"] == pytest.approx(40 / 3600, abs=1e-4)


def test_ignition_off_and_obd_loss_close_the_window_early() -> None:
    s = EngineSummarizer(300.0)
    feed_all(s, [reading(float(t), rpm=900.0) for t in range(10)])
    assert s.feed(IgnitionSample(10.0, on=True)) == []
    (off,) = s.feed(IgnitionSample(10.5, on=False))
    assert off.ts_mono == 9.0 and off.data["readings"] == 10
    feed_all(s, [reading(20.0 + t, rpm=900.0) for t in range(3)])
    assert s.feed(LinkSample(23.0, Link.GNSS, LinkState.DOWN)) == []
    (lost,) = s.feed(LinkSample(23.0, Link.OBD, LinkState.DOWN, "unplugged"))
    assert lost.data["readings"] == 3


def test_a_silent_adapter_closes_the_window_after_one_interval() -> None:
    s = EngineSummarizer(60.0)
    feed_all(s, [reading(float(t), rpm=800.0, voltage_v=14.1) for t in range(5)])
    assert s.tick(63.9) == []
    (quiet,) = s.tick(64.0)
    assert quiet.data == {
        "window_s": 4.0, "readings": 5, "rpm_avg": 800.0, "rpm_max": 800.0, "voltage_v": 14.1
    }


def test_a_parked_van_with_only_the_adapter_voltage_sends_no_summaries() -> None:
    s = EngineSummarizer(60.0)
    assert feed_all(s, [reading(float(t), voltage_v=12.4) for t in range(0, 3600, 5)]) == []
    assert s.tick(7200.0) == [] and s.flush() == []
    # ... but while the engine runs, the voltage is part of the story.
    s.feed(reading(4000.0, rpm=800.0))
    s.feed(reading(4001.0, voltage_v=14.2))
    (summary,) = s.flush()
    assert summary.data["readings"] == 2 and summary.data["voltage_v"] == 14.2


def test_missing_figures_are_left_out_not_zero_and_the_source_is_named() -> None:
    s = EngineSummarizer(60.0)
    s.feed(
        OBDReading(
            ts_mono=0.0,
            fuel_rate_lph=2.0,
            fuel_rate_source=FuelRateSource.MAF,
            fuel_level_pct=41.2,
        )
    )
    (summary,) = s.flush()
    assert "rpm_avg" not in summary.data and "idle_s" not in summary.data
    assert summary.data["fuel_rate_source"] == str(FuelRateSource.MAF)
    assert summary.data["fuel_level_pct"] == 41.2


def test_a_long_gap_between_readings_cannot_invent_litres() -> None:
    s = EngineSummarizer(3600.0, max_step_s=10.0)
    feed_all(s, [reading(0.0, fuel_rate_lph=36.0), reading(1000.0, fuel_rate_lph=36.0)])
    (summary,) = s.flush()
    assert summary.data["fuel_used_l"] == pytest.approx(0.1)  # 10 s at 36 L/h, not 1000 s


def test_interval_zero_switches_summaries_off() -> None:
    s = EngineSummarizer(0.0)
    assert feed_all(s, [reading(float(t), rpm=800.0) for t in range(100)]) == []
    assert s.tick(1e6) == [] and s.flush() == []


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(-30.0, 40.0),
            st.one_of(st.none(), st.floats(0.0, 60.0)),
        ),
        min_size=1,
        max_size=200,
    ),
    interval=st.floats(1.0, 120.0),
)
def test_hostile_time_never_gives_negative_durations_and_windows_add_up(
    steps: list[tuple[float, float | None]], interval: float
) -> None:
    s = EngineSummarizer(interval)
    t = 1000.0
    out: list[EngineSummary] = []
    readings = 0
    for dt_s, rate in steps:
        t += dt_s
        if rate is not None:
            out += s.feed(reading(t, rpm=800.0, fuel_rate_lph=rate))
        else:
            out += s.feed(reading(t, rpm=800.0))
        out += s.tick(t)
        readings += 1
    out += s.flush()
    assert sum(o.data["readings"] for o in out) == readings
    for o in out:
        assert o.data["window_s"] >= 0.0
        assert o.data.get("fuel_used_l", 0.0) >= 0.0
        # A window never spans more than an interval plus the step that closed it.
        assert o.data["window_s"] <= interval + 40.0 + 1e-6


def test_fuel_across_windows_adds_up_to_the_whole_drive() -> None:
    s = EngineSummarizer(60.0)
    # Fuel rate in every other reading, as a slower poll group gives it: 3.6 L/h for 1000 s.
    samples = [
        reading(t * 0.5, rpm=1500.0, speed_kmh=50.0, **({"fuel_rate_lph": 3.6} if t % 2 else {}))
        for t in range(1, 2002)
    ]
    out = feed_all(s, samples) + s.flush()
    assert len(out) == 17
    assert sum(o.data["fuel_used_l"] for o in out) == pytest.approx(1.0, abs=len(out) * 1e-4)
    assert sum(o.data["window_s"] for o in out) == pytest.approx(1000.0)
