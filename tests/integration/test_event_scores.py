"""Event detection measured against the simulator's ground truth, for every bundled scenario."""

from __future__ import annotations

from typing import Any

import pytest

from bench.score_events import run

TARGET = 0.95

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scores() -> dict[str, Any]:
    return run()


def test_every_event_type_meets_the_precision_and_recall_target(scores: dict[str, Any]) -> None:
    types = scores["types"]
    assert len(types) >= 20, sorted(types)  # the scenarios exercise (nearly) every event type
    below = {
        etype: (row["precision"], row["recall"])
        for etype, row in types.items()
        if row["precision"] is None or row["precision"] < TARGET or row["recall"] < TARGET
    }
    assert not below, f"{below}; misses: {scores['misses']}"
    assert scores["overall"]["recall"] >= TARGET

