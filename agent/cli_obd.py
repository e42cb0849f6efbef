"""The ``telematics-agent obd`` subcommand: a technician's check of the adapter and the car."""

from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
import time
from typing import Any, TextIO

from drivers.obd import OBDReader, OBDSettings
from drivers.samples import DTCSample, LinkSample, LinkState, OBDReading, Sample, VehicleInfo


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "obd",
        help="read an ELM327 OBD-II adapter and print its readings",
        description=(
            "Connect to the adapter, print adapter, protocol, VIN and supported PIDs, "
            "then one reading per line until interrupted."
        ),
    )
    parser.add_argument("--port", required=True, help="serial port or pyserial URL of the adapter")
    parser.add_argument("--baud", type=int, default=38400, help="serial speed; 0 = detect")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--fuel-type",
        choices=("petrol", "diesel", "lpg"),
        default="diesel",
        help="fuel, for fuel rate derived from MAF or MAP",
    )
    parser.add_argument("--count", type=int, default=0, help="stop after N readings (0 = never)")
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after S seconds")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=20.0,
        help="give up (exit 1) when the adapter has not answered within S seconds",
    )
    parser.set_defaults(func=run)


def _record(sample: Sample) -> dict[str, Any]:
    if isinstance(sample, VehicleInfo):
        return {
            "type": "vehicle",
            "adapter": sample.adapter,
            "protocol": sample.protocol,
            "vin": sample.vin,
            "supported_pids": list(sample.supported_pids),
            "multi_pid": sample.multi_pid,
        }
    if isinstance(sample, OBDReading):
        fields = {
            f.name: getattr(sample, f.name)
            for f in dataclasses.fields(sample)
            if f.name != "ts_mono" and getattr(sample, f.name) is not None
        }
        if "fuel_rate_source" in fields:
            fields["fuel_rate_source"] = str(fields["fuel_rate_source"])
        return {"type": "reading", "ts_mono": round(sample.ts_mono, 3), **fields}
    if isinstance(sample, DTCSample):
        return {"type": "dtc", "stored": list(sample.stored), "pending": list(sample.pending)}
    if isinstance(sample, LinkSample):
        return {"type": "link", "state": str(sample.state), "reason": sample.reason}
    return {"type": type(sample).__name__}


def _print_text(record: dict[str, Any], out: TextIO) -> None:
    kind = record.pop("type")
    if kind == "vehicle":
        print(f"adapter:        {record['adapter']}", file=out)
        print(f"protocol:       {record['protocol']}", file=out)
        print(f"VIN:            {record['vin'] or '(not reported)'}", file=out)
        print(f"supported PIDs: {' '.join(record['supported_pids'])}", file=out)
        print(
            f"multi-PID:      {'yes' if record['multi_pid'] else 'no (one PID per request)'}",
            file=out,
        )
    elif kind == "reading":
        record.pop("ts_mono")
        print(
            "  ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
            ),
            file=out,
        )
    elif kind == "dtc":
        stored = ", ".join(record["stored"]) or "none"
        pending = ", ".join(record["pending"]) or "none"
        print(f"trouble codes:  stored {stored}; pending {pending}", file=out)
    elif kind == "link":
        print(f"adapter {record['state']}: {record['reason']}", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        settings = OBDSettings(port=args.port, baud=args.baud, fuel_type=args.fuel_type)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples: queue.Queue[Sample] = queue.Queue()
    reader = OBDReader(settings, samples.put, time.monotonic)
    started = time.monotonic()
    answered = False
    readings = 0
    reader.start()
    try:
        while True:
            now = time.monotonic()
            if args.seconds and now - started >= args.seconds:
                break
            if not answered and now - started >= args.connect_timeout:
                print(
                    f"error: no ELM327 adapter answered on {args.port} within "
                    f"{args.connect_timeout:.0f} s",
                    file=sys.stderr,
                )
                return 1
            try:
                sample = samples.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(sample, LinkSample):
                answered = answered or sample.state == LinkState.UP
                if sample.state == LinkState.DOWN and not answered:
                    continue  # still looking for the adapter; the timeout above reports it
            record = _record(sample)
            if args.json:
                print(json.dumps(record), file=out, flush=True)
            else:
                _print_text(record, out)
                out.flush()
            if isinstance(sample, OBDReading):
                readings += 1
                if args.count and readings >= args.count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        reader.stop()
    return 0
