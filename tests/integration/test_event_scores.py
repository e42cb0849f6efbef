"""Event detection measured against the simulator's ground truth, for every bundled scenario."""

from __future__ import annotations

from typing import Any

import pytest

from bench.score_events import run

TARGET = 0.95
# ATRV answers in steps of 0.1 V ("12.3V"); the truth compares the model's exact voltage with
# 12.3 V. In ignition_cycles the battery sits at 12.30-12.35 V, which the adapter reports as
# 12.3 V: by the adapter's reading it is low from the start, by the model's only after 360 s.
RESOLUTION_LIMITED = {"low_battery"}

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
        if etype not in RESOLUTION_LIMITED
        and (row["precision"] is None or row["precision"] < TARGET or row["recall"] < TARGET)
    }
    assert not below, f"{below}; misses: {scores['misses']}"
    assert scores["overall"]["recall"] >= TARGET


def test_low_battery_meets_the_target(scores: dict[str, Any]) -> None:
    row = scores["types"]["low_battery"]
    assert row["precision"] >= TARGET and row["recall"] >= TARGET

