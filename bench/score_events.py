"""Event scores: record every bundled scenario, replay it, match the events against ground truth.

For each scenario in ``simulator/scenarios/``, in each of ``SETUPS``, the simulator's capture
(raw NMEA bytes, ELM327 request/reply pairs, ignition levels, unplug/replug) is built in memory,
replayed through the agent's full pipeline (the same code path as ``telematics-agent replay``)
and every published event is matched against the truth derived from the vehicle model: same
type, onset within the type's tolerance (``TOLERANCE_S``), each truth event matched at most once,
nearest first.
Precision = matched / detected, recall = matched / truth, per event type and overall.

Run: ``.venv/bin/python -m bench.score_events`` (prints a table); ``run()`` returns the figures.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.config import from_dict
from agent.geofence import GeofenceSet, parse_geofences
from agent.replay import replay_lines
from simulator.capture import CaptureWriter
from simulator.model import VehicleModel
from simulator.nmea import Talker
from simulator.scenario import bundled_names, load_scenario
from simulator.truth import derive_truth

# Onset tolerance per event type, seconds, and why it is that wide.
TOLERANCE_S: dict[str, float] = {
    # Harsh events: the acceleration window (1 s) centres the estimate; 2 Hz OBD speed.
    "harsh_accel": 3.0,
    "harsh_brake": 3.0,
    "harsh_turn": 3.0,
    # OBD speed in whole km/h at 2 Hz against the model's continuous speed.
    "speeding_start": 5.0,
    "speeding_end": 5.0,
    # Standstill is "OBD speed below 2 km/h", the truth "exactly zero"; 2 s ignition debounce.
    "trip_start": 15.0,
    "trip_end": 15.0,
    "idle_start": 15.0,
    "idle_end": 15.0,
    "stop_start": 15.0,
    "stop_end": 15.0,
    "ignition_on": 15.0,
    "ignition_off": 15.0,
    # Receiver noise (a few metres, 1 Hz) along the boundary.
    "geofence_enter": 10.0,
    "geofence_exit": 10.0,
    # The receiver reports "no fix" after its 3 s fix timeout; 1 Hz epochs.
    "gnss_lost": 10.0,
    "gnss_regained": 10.0,
    "obd_lost": 10.0,
    "obd_regained": 10.0,
    # Trouble codes are read every 60 s (mode 03), fuel level every 10 s, voltage every 30 s.
    "dtc_set": 65.0,
    "dtc_cleared": 65.0,
    "low_fuel": 15.0,
    "low_battery": 35.0,
}


@dataclass(frozen=True, slots=True)
class Found:
    type: str
    t_s: float


def scenario_config(scenario: Any) -> tuple[Any, GeofenceSet]:
    cfg = from_dict(
        {
            "device": {"id": "score-van"},
            "detect": {"speeding": {"limit_kmh": float(scenario.speed_limit_kmh)}},
        }
    )
    fences = parse_geofences(scenario.geofences) if scenario.geofences else GeofenceSet()
    return cfg, fences


# (GNSS epochs per second, talker, ELM327 variant) each scenario is recorded with.
SETUPS: tuple[tuple[float, str, str], ...] = (
    (1.0, "GP", "v1.5"),
    (10.0, "GP", "v1.5"),
    (1.0, "GN", "clone-v2.1"),  # no multi-PID requests, GN talker
)


class Drive:
    """One scenario's vehicle model and truth, built once and recorded in several setups."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scenario = load_scenario(name)
        self.model = VehicleModel(self.scenario)
        self.truth = [Found(e.type.value, e.t_s) for e in derive_truth(self.model)]

    def detect(
        self, gnss_hz: float = 1.0, talker: str = "GP", elm_variant: str = "v1.5"
    ) -> tuple[list[Found], float]:
        """(detected events, CPU seconds of the replay) for one recording setup."""
        scenario = self.scenario
        writer = CaptureWriter(self.model, scenario.seed, gnss_hz, Talker(talker), elm_variant)
        lines = [json.dumps(writer.header())] + [json.dumps(r) for r in writer.records()]
        cfg, fences = scenario_config(scenario)
        start: dt.datetime = scenario.start_utc
        started = time.process_time()
        detected = [
            Found(
                m.payload["type"],
                (
                    dt.datetime.fromisoformat(m.payload["ts"].replace("Z", "+00:00")) - start
                ).total_seconds(),
            )
            for m in replay_lines(lines, cfg, source=self.name, geofences=fences)
            if "/event/" in m.topic
        ]
        return detected, time.process_time() - started


def match(
    detected: Iterable[Found], truth: Iterable[Found]
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(true positives, false positives, false negatives) per type; nearest pairs first."""
    det, tru = list(detected), list(truth)
    pairs = sorted(
        (abs(d.t_s - t.t_s), i, j)
        for i, d in enumerate(det)
        for j, t in enumerate(tru)
        if d.type == t.type and abs(d.t_s - t.t_s) <= TOLERANCE_S.get(d.type, 5.0)
    )
    used_d: set[int] = set()
    used_t: set[int] = set()
    tp: Counter[str] = Counter()
    for _, i, j in pairs:
        if i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
        tp[det[i].type] += 1
    fp = Counter(d.type for i, d in enumerate(det) if i not in used_d)
    fn = Counter(t.type for j, t in enumerate(tru) if j not in used_t)
    return tp, fp, fn


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def run(setups: tuple[tuple[float, str, str], ...] = SETUPS) -> dict[str, Any]:
    """Score every bundled scenario in each setup; figures per type, per scenario, overall."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    scenarios: dict[str, Any] = {}
    sim_s = cpu_s = 0.0
    misses: list[str] = []
    for name in bundled_names():
        drive = Drive(name)
        truth, duration_s = drive.truth, drive.model.duration_s
        for hz, talker, variant in setups:
            detected, cpu = drive.detect(hz, talker, variant)
            label = f"{name}@{hz:g}Hz/{talker}/{variant}"
            a, b, c = match(detected, truth)
            tp += a
            fp += b
            fn += c
            sim_s += duration_s
            cpu_s += cpu
            scenarios[label] = {
                "truth": len(truth),
                "detected": len(detected),
                "matched": sum(a.values()),
                "false_positives": dict(b),
                "false_negatives": dict(c),
            }
            misses += [f"{label}: missed {t}" for t in sorted(c.elements())]
            misses += [f"{label}: extra {t}" for t in sorted(b.elements())]
    types: dict[str, Any] = {}
    for etype in sorted(set(tp) | set(fp) | set(fn)):
        types[etype] = {
            "truth": tp[etype] + fn[etype],
            "detected": tp[etype] + fp[etype],
            "precision": _ratio(tp[etype], tp[etype] + fp[etype]),
            "recall": _ratio(tp[etype], tp[etype] + fn[etype]),
            "tolerance_s": TOLERANCE_S.get(etype, 5.0),
        }
    t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "types": types,
        "overall": {"precision": _ratio(t, t + p), "recall": _ratio(t, t + n), "truth": t + n},
        "scenarios": scenarios,
        "misses": misses,
        "simulated_hours": sim_s / 3600.0,
        "replay_cpu_s": cpu_s,
        "cpu_s_per_van_hour": cpu_s / (sim_s / 3600.0) if sim_s else None,
    }


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x:5.3f}"


def main() -> int:
    res = run()
    print(f"{'event type':<16} {'truth':>5} {'found':>5} {'prec':>6} {'recall':>6} {'tol s':>6}")
    for etype, row in res["types"].items():
        print(
            f"{etype:<16} {row['truth']:>5} {row['detected']:>5} {_fmt(row['precision']):>6} "
            f"{_fmt(row['recall']):>6} {row['tolerance_s']:>6g}"
        )
    o = res["overall"]
    print(
        f"{'overall':<16} {o['truth']:>5} {'':>5} {_fmt(o['precision']):>6} {_fmt(o['recall']):>6}"
    )
    for line in res["misses"]:
        print("  " + line)
    print(
        f"replay: {res['replay_cpu_s']:.2f} CPU s for {res['simulated_hours']:.2f} simulated "
        f"van-hours = {res['cpu_s_per_van_hour']:.2f} CPU s per van-hour"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
