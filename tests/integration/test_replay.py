"""`telematics-agent replay` as a real process over captures recorded by `telematics-sim record`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.contract import validate

ROOT = Path(__file__).parents[2]
SCENARIOS = ROOT / "simulator" / "scenarios"


def _cli(module: str, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="module")
def urban(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("urban")
    cap, truth = d / "urban.cap", d / "urban.truth"
    res = _cli(
        "simulator.cli",
        "record",
        "--scenario",
        "urban_delivery",
        "--out",
        str(cap),
        "--truth",
        str(truth),
    )
    assert res.returncode == 0, res.stderr
    cfg = d / "agent.toml"
    cfg.write_text(
        '[device]\nid = "van-7"\n[detect]\n'
        f'geofences_file = "{SCENARIOS / "urban_geofences.geojson"}"\n'
        "[detect.speeding]\nlimit_kmh = 50\n"
    )
    return {"dir": d, "capture": cap, "truth": truth, "config": cfg}


def _replay(urban: dict[str, Path], capture: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return _cli(
        "agent.cli", "replay", str(capture), "--config", str(urban["config"]), "--out", str(out)
    )


def _messages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replay_writes_every_message_valid_against_its_schema(urban: dict[str, Path]) -> None:
    out = urban["dir"] / "out.jsonl"
    res = _replay(urban, urban["capture"], out)
    assert res.returncode == 0, res.stderr
    messages = _messages(out)
    for m in messages:
        validate(m["topic"], m["payload"])
    topics = {m["topic"].split("/", 3)[3] for m in messages}
    assert {"pos", "live", "event/trip_start", "event/trip_end", "event/harsh_brake"} <= topics
    assert all(m["topic"].startswith("fleet/v1/van-7/") for m in messages)
    events = [m["payload"] for m in messages if "/event/" in m["topic"]]
    brake = next(e for e in events if e["type"] == "harsh_brake")
    assert brake["evidence"] and {"t_rel_s", "speed_kmh", "accel_mps2"} <= set(brake["evidence"][0])
    trip_end = next(e for e in events if e["type"] == "trip_end")
    truth_end = next(
        json.loads(line) for line in urban["truth"].read_text().splitlines() if '"trip_end"' in line
    )
    assert trip_end["data"]["distance_km"] == pytest.approx(
        truth_end["data"]["distance_km"], rel=0.03
    )
    assert trip_end["data"]["fuel_used_l"] == pytest.approx(
        truth_end["data"]["fuel_used_l"], rel=0.15
    )
    # Every spooled record has its own seq, with no gaps: backends rebuild order from it.
    seqs = [
        m["payload"]["seq"]
        for m in messages
        if "/event/" in m["topic"] or m["topic"].endswith("/engine")
    ]
    engine = [m["payload"]["data"] for m in messages if m["topic"].endswith("/engine")]
    assert engine, "the urban round's engine runs: summaries on the engine topic"
    # The summaries cover the engine's fuel: the trip's fuel, plus the idling before it.
    assert sum(e["fuel_used_l"] for e in engine) == pytest.approx(
        truth_end["data"]["fuel_used_l"], rel=0.25
    )
    for m in messages:
        if m["topic"].endswith("/pos"):
            seqs += [r["seq"] for r in m["payload"]["records"]]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))


def test_replay_is_deterministic(urban: dict[str, Path]) -> None:
    a, b = urban["dir"] / "a.jsonl", urban["dir"] / "b.jsonl"
    assert _replay(urban, urban["capture"], a).returncode == 0
    assert _replay(urban, urban["capture"], b).returncode == 0
    assert a.read_text() == b.read_text()


def test_hostile_capture_lines_are_counted_and_skipped(urban: dict[str, Path]) -> None:
    lines = urban["capture"].read_text().splitlines()
    noisy = urban["dir"] / "noisy.cap"
    junk = [
        "{not json",
        "[]",
        '{"t": "soon", "dev": "gnss", "data": ""}',
        '{"t": 1.0, "dev": "toaster"}',
        '{"t": 1.0, "dev": "gnss", "data": "\\u0000\\u00ff$GPRMC,garbage*00\\r\\n"}',
        '{"t": 1.0, "dev": "obd", "req": "010D", "reply": "NO DATA\\r\\r>"}',
        '{"t": 1.0, "dev": "ign", "level": 7}',
    ]
    noisy.write_text("\n".join([lines[0], *junk, *lines[1:]]) + "\n")
    out = urban["dir"] / "noisy.jsonl"
    res = _replay(urban, noisy, out)
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stderr and "bad_json=1" in res.stderr
    clean = urban["dir"] / "clean.jsonl"
    assert _replay(urban, urban["capture"], clean).returncode == 0

    def kinds(p: Path) -> list[Any]:
        return [m["payload"]["type"] for m in _messages(p) if "/event/" in m["topic"]]

    assert kinds(out) == kinds(clean)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "empty"), ("hello\n", "not JSON"), ('{"capture": 9}\n', "version 1 capture header")],
)
def test_not_a_capture_exits_2_with_a_clear_error(
    urban: dict[str, Path], content: str, message: str
) -> None:
    bad = urban["dir"] / "bad.cap"
    bad.write_text(content)
    res = _replay(urban, bad, urban["dir"] / "x.jsonl")
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_bad_config_exits_2(urban: dict[str, Path]) -> None:
    cfg = urban["dir"] / "bad.toml"
    cfg.write_text('[device]\nid = "v"\n[detect.harsh]\nbrake_mps2 = 3.0\n')
    res = _cli(
        "agent.cli", "replay", str(urban["capture"]), "--config", str(cfg), "--out", "/dev/null"
    )
    assert res.returncode == 2
    assert "detect.harsh.brake_mps2" in res.stderr and "Traceback" not in res.stderr
