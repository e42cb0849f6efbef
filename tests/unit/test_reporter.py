"""Position reporter: interval, distance, heading, stopped interval, state changes, every fix."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ReportSection
from agent.reporter import Position, PositionReporter, ReportReason
from drivers.samples import GNSSFix, Sample
from tests.unit.test_detect_drive import Drive
from tests.unit.test_detect_properties import _parked_samples, jump


def _report(samples: list[Sample], settings: ReportSection | None = None) -> list[Position]:
    rep = PositionReporter(settings or ReportSection())
    out: list[Position] = []
    for s in samples:
        out += rep.feed(s)
    return out


def test_cruising_straight_reports_every_100_m_or_10_s() -> None:
    # 36 km/h = 10 m/s: 100 m come after 10 s, so distance and interval coincide.
    d = Drive().ignition(True).park(5).to_speed(36).cruise(120)
    positions = [p for p in _report(d.samples()) if p.ts_mono > 20]
    gaps = [b.ts_mono - a.ts_mono for a, b in itertools.pairwise(positions)]
    assert gaps and max(gaps) <= 10.0 + 1e-6 and min(gaps) >= 9.0


def test_fast_driving_reports_by_distance() -> None:
    d = Drive().ignition(True).park(5).to_speed(90, 2.0).cruise(60)  # 25 m/s
    positions = [p for p in _report(d.samples()) if p.ts_mono > 20]
    assert Counter(p.reason for p in positions)[ReportReason.DISTANCE] >= 10
    gaps = {round(b.ts_mono - a.ts_mono) for a, b in itertools.pairwise(positions)}
    assert gaps == {4}  # 100 m at 25 m/s, at 1 Hz fixes


@pytest.mark.parametrize(("turn_deg", "reports"), [(14.0, False), (16.0, True)])
def test_heading_change_threshold(turn_deg: float, reports: bool) -> None:
    d = Drive().ignition(True).park(5).to_speed(18, 1.0).cruise(20)
    d.turn(1.0, turn_deg).cruise(1.0)
    turn_at = d.now - 2.0
    positions = _report(d.samples())
    heading = [p for p in positions if p.reason == ReportReason.HEADING and p.ts_mono > turn_at]
    assert len(heading) == int(reports)


def test_parked_reports_every_300_s_and_once_on_each_state_change() -> None:
    d = Drive().ignition(True).park(10).to_speed(36).cruise(30).to_speed(0, 2.0).park(700)
    d.ignition(False).park(20)
    positions = _report(d.samples())
    reasons = [p.reason for p in positions]
    assert reasons[0] == ReportReason.FIRST
    assert reasons.count(ReportReason.STATE_CHANGE) == 2  # stopped -> moving -> stopped
    assert reasons.count(ReportReason.IGNITION) == 1
    stopped = [p for p in positions if p.reason == ReportReason.STOPPED]
    assert len(stopped) == 2  # 700 s parked: at 300 s and 600 s


def test_min_interval_zero_reports_every_fix() -> None:
    d = Drive(gnss_hz=10.0).ignition(True).park(30)
    samples = d.samples()
    fixes = [s for s in samples if isinstance(s, GNSSFix)]
    assert len(_report(samples, ReportSection(min_interval_s=0.0))) == len(fixes)


def test_min_interval_caps_the_rate() -> None:
    d = Drive(gnss_hz=10.0).ignition(True).park(5).to_speed(120, 3.0).cruise(30)
    positions = _report(d.samples(), ReportSection(min_interval_s=5.0, moving_distance_m=10.0))
    gaps = [b.ts_mono - a.ts_mono for a, b in itertools.pairwise(positions)]
    assert min(gaps) >= 5.0 - 1e-6


@settings(max_examples=30, deadline=None)
@given(ignition_on=st.booleans(), jumps=st.lists(jump, min_size=20, max_size=900))
def test_parked_jitter_reports_only_the_stopped_interval(
    ignition_on: bool, jumps: list[tuple[float, float, float, float, float]]
) -> None:
    positions = _report(_parked_samples(ignition_on, jumps))
    assert positions[0].reason == ReportReason.FIRST
    assert len(positions) <= 1 + len(jumps) // 300 + 1
    assert all(p.reason in (ReportReason.FIRST, ReportReason.STOPPED) for p in positions)
