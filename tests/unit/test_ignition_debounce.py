"""Ignition debouncer: levels in, debounced IgnitionSamples (stamped at the level's onset) out."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ignition import IgnitionDebouncer
from drivers.samples import IgnitionSample


def _drive(
    deb: IgnitionDebouncer, steps: list[tuple[float, int]], end: float
) -> list[IgnitionSample]:
    out: list[IgnitionSample] = []
    for t, level in steps:
        out += deb.feed(level, t)
    out += deb.tick(end)
    return out


def test_initial_state_is_emitted_once_it_holds() -> None:
    deb = IgnitionDebouncer(2.0)
    assert deb.feed(0, 0.0) == []
    assert deb.tick(1.9) == []
    assert deb.tick(2.0) == [IgnitionSample(0.0, False, "gpio")]
    assert deb.tick(10.0) == []


@pytest.mark.parametrize(("hold_s", "changes"), [(1.9, False), (2.1, True)])
def test_debounce_boundary(hold_s: float, changes: bool) -> None:
    deb = IgnitionDebouncer(2.0)
    out = _drive(deb, [(0.0, 0), (10.0, 1), (10.0 + hold_s, 0)], 30.0)
    on = [s for s in out if s.on]
    assert len(on) == int(changes)
    if changes:
        assert on[0].ts_mono == 10.0  # the onset, not the confirmation
    assert deb.glitches == int(not changes)


def test_cranking_bounce_is_one_change() -> None:
    deb = IgnitionDebouncer(2.0)
    steps = [(0.0, 0), (5.0, 1), (5.3, 0), (5.4, 1), (5.9, 0), (6.0, 1)]
    out = _drive(deb, steps, 20.0)
    assert out == [IgnitionSample(0.0, False), IgnitionSample(6.0, True)]


def test_active_low_inverts_the_level() -> None:
    out = _drive(IgnitionDebouncer(0.5, active_low=True), [(0.0, 0)], 1.0)
    assert out == [IgnitionSample(0.0, True)]


def test_zero_debounce_reports_at_once() -> None:
    deb = IgnitionDebouncer(0.0)
    assert deb.feed(1, 3.0) == [IgnitionSample(3.0, True)]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_debounce_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="debounce_s"):
        IgnitionDebouncer(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf")])),
            st.integers(0, 255),
        ),
        max_size=60,
    )
)
def test_hostile_times_never_crash_and_states_alternate(steps: list[tuple[float, int]]) -> None:
    deb = IgnitionDebouncer(2.0)
    out = _drive(deb, steps, 1e7)
    for a, b in itertools.pairwise(out):
        assert a.on != b.on
    assert all(math.isfinite(s.ts_mono) for s in out)
