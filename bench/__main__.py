"""Benchmarks: run every bench module, print one table, write bench/results.json.

Each module exposes ``run() -> dict[str, float]`` and reports its own figures next to a baseline
measured in the same run (machines here are noisy, so only same-run ratios mean anything).
Nothing here fails on a time: targets are printed beside the figures for a person to read.

    python -m bench            # everything
    python -m bench spool gnss # a selection (module names without the bench_ prefix)
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (module, what it measures). Order: cheap first.
MODULES = (
    ("bench_gnss", "NMEA decoder throughput vs pynmea2"),
    ("bench_spool", "spool records/s and disk bytes per record vs plain ack queue"),
    ("bench_wire", "bytes on the wire per position vs one JSON message per record"),
    ("bench_drain", "36,000-record backlog through a 100 ms RTT proxy vs paho defaults"),
    ("bench_obd", "OBD PID values/s (and readings/s) vs a plain python-obd loop"),
    ("score_events", "event detection precision and recall per type"),
    ("bench_daemon", "startup to READY=1, live RSS and CPU, replay CPU per van-hour"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.3f}".rstrip("0").rstrip(".")
        return f"{value:.3g}"
    return str(value)


def _rows(key: str, value: Any) -> list[tuple[str, str]]:
    """Table rows for one figure: nested tables become one row per entry, scalars one row."""
    if isinstance(value, dict):
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            return [(key, "  ".join(f"{k}={_fmt(v)}" for k, v in value.items()))]
        out: list[tuple[str, str]] = []
        for sub, v in value.items():
            out.extend(_rows(f"{key}.{sub}", v))
        return out
    if isinstance(value, list):
        return [(key, f"{len(value)} items" if value else "none")]
    return [(key, _fmt(value))]


def main(argv: list[str]) -> int:
    wanted = {a if a.startswith(("bench_", "score_")) else f"bench_{a}" for a in argv}
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    rows: list[tuple[str, str, str]] = []
    failed = []
    for name, title in MODULES:
        if wanted and name not in wanted and name.replace("score_", "bench_") not in wanted:
            continue
        print(f"== {name}: {title}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            started = time.monotonic()
            figures = module.run()
            figures.setdefault("bench_wall_s", time.monotonic() - started)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        results[name] = figures
        for key, value in figures.items():
            rows.extend((name, k, v) for k, v in _rows(key, value))
    width_a = max((len(r[0]) for r in rows), default=10)
    width_b = max((len(r[1]) for r in rows), default=10)
    print(f"{'bench':<{width_a}}  {'figure':<{width_b}}  value")
    print(f"{'-' * width_a}  {'-' * width_b}  -----")
    for a, b, c in rows:
        print(f"{a:<{width_a}}  {b:<{width_b}}  {c}")
    out = HERE / "results.json"
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {out}")
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
