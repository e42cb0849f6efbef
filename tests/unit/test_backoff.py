"""Reconnect backoff: exponential growth, full jitter, bounds, reset."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agent.publisher import Backoff


@given(st.floats(0.05, 10), st.floats(0.05, 600), st.integers(0, 2**32))
def test_delays_stay_within_bounds(low: float, high: float, seed: int) -> None:
    b = Backoff(low, high, random.Random(seed))
    for _ in range(60):
        d = b.next_delay()
        assert low <= d <= max(low, high) + 1e-9


def test_ceiling_doubles_until_the_maximum() -> None:
    b = Backoff(1.0, 120.0, random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    for d, ceiling in zip(delays, [min(120.0, 2.0**i) for i in range(12)], strict=True):
        assert 1.0 <= d <= ceiling
    assert max(delays[8:]) > 16, "late attempts spread far beyond the first second"


def test_jitter_spreads_a_fleet_reconnecting_at_once() -> None:
    # 500 vans lose the broker together: their 6th retries must not land together.
    delays = []
    for seed in range(500):
        b = Backoff(1.0, 120.0, random.Random(seed))
        for _ in range(5):
            b.next_delay()
        delays.append(b.next_delay())
    assert min(delays) < 5 and max(delays) > 28
    assert len({round(d, 1) for d in delays}) > 200


def test_reset_starts_over_after_a_good_connection() -> None:
    b = Backoff(1.0, 120.0, random.Random(3))
    for _ in range(10):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 1.0 + 1e-9
