"""The `telematics-agent gnss` subcommand: decode a receiver or a capture, one fix per line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drivers.gnss import GNSSReceiver, GNSSSettings
from drivers.nmea import Epoch, NMEADecoder
from drivers.samples import GNSSFix, LinkSample, Sample

JSON_KEYS = ("utc", "lat", "lon", "alt_m", "speed_mps", "course_deg", "mode", "sats", "hdop")
READ_CHUNK_BYTES = 65536
Show = Callable[[GNSSFix], str]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "gnss",
        help="decode NMEA from a serial port or a capture file, one fix per line",
        description=(
            "Decode NMEA from a serial port (a device path, a pseudo-terminal or a pyserial URL "
            "such as socket://host:port) or from a capture file of raw NMEA, and print one fix "
            "per line. Exits 0 when at least one fix was decoded, 1 otherwise."
        ),
    )
    parser.add_argument("--source", required=True, metavar="PATH", help="serial port or file")
    parser.add_argument("--json", action="store_true", help="one JSON object per fix")
    parser.add_argument(
        "--baud", type=int, default=9600, help="serial speed; 0 = detect (default 9600)"
    )
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="serial port: stop after N fixes"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=10.0,
        metavar="S",
        help="serial port: stop after S seconds (default 10; 0 = run until interrupted)",
    )
    parser.add_argument(
        "--checksum-policy",
        choices=("reject", "accept"),
        default="reject",
        help="sentences with a bad checksum (default reject)",
    )
    parser.set_defaults(func=run)


def fix_to_json(fix: GNSSFix) -> str:
    utc = fix.utc.astimezone(dt.UTC)
    record = {
        "utc": utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z",
        "lat": fix.lat,
        "lon": fix.lon,
        "alt_m": fix.alt_m,
        "speed_mps": fix.speed_mps,
        "course_deg": fix.course_deg,
        "mode": int(fix.mode),
        "sats": fix.sats,
        "hdop": fix.hdop,
    }
    return json.dumps(record)


def _opt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fix_to_text(fix: GNSSFix) -> str:
    return (
        f"{fix.utc:%Y-%m-%dT%H:%M:%S.%f}"[:-3]
        + f"Z {fix.lat:.7f} {fix.lon:.7f} alt {_opt(fix.alt_m, '.1f')} m"
        f" speed {_opt(fix.speed_mps, '.2f')} m/s course {_opt(fix.course_deg, '.1f')}"
        f" {int(fix.mode)}D sats {_opt(fix.sats, 'd')} hdop {_opt(fix.hdop, '.2f')}"
    )


def run(args: argparse.Namespace) -> int:
    show: Show = fix_to_json if args.json else fix_to_text
    source = Path(args.source)
    if source.is_file():
        return _run_file(source, args.checksum_policy, show)
    return _run_port(args, show)


def _run_file(path: Path, checksum_policy: str, show: Show) -> int:
    decoder = NMEADecoder(checksum_policy=checksum_policy)
    fixes = no_fix = 0
    try:
        with path.open("rb") as capture:
            while chunk := capture.read(READ_CHUNK_BYTES):
                epochs = decoder.feed(chunk, 0.0)
                fixes, no_fix = _print(epochs, show, fixes, no_fix)
    except OSError as exc:
        print(f"telematics-agent gnss: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    fixes, no_fix = _print(decoder.flush(), show, fixes, no_fix)
    _summary(fixes, no_fix, decoder.stats())
    return 0 if fixes else 1


def _print(epochs: list[Epoch], show: Show, fixes: int, no_fix: int) -> tuple[int, int]:
    for epoch in epochs:
        if epoch.fix is not None:
            print(show(epoch.fix), flush=True)
            fixes += 1
        else:
            no_fix += 1
    return fixes, no_fix


def _summary(fixes: int, no_fix: int, stats: dict[str, int]) -> None:
    counters = ", ".join(f"{k} {v}" for k, v in stats.items() if v and k not in ("epochs", "fixes"))
    print(
        f"{fixes} fixes, {no_fix} epochs without a fix" + (f"; {counters}" if counters else ""),
        file=sys.stderr,
    )


def _run_port(args: argparse.Namespace, show: Show) -> int:
    samples: queue.Queue[Sample] = queue.Queue()
    settings = GNSSSettings(port=args.source, baud=args.baud, checksum_policy=args.checksum_policy)
    receiver = GNSSReceiver(settings, samples.put, time.monotonic)
    deadline = time.monotonic() + args.timeout_s if args.timeout_s > 0 else float("inf")
    fixes = 0
    last_link = "no data"
    receiver.start()
    try:
        while time.monotonic() < deadline and not (args.count and fixes >= args.count):
            try:
                sample = samples.get(timeout=min(0.2, max(deadline - time.monotonic(), 0.01)))
            except queue.Empty:
                continue
            if isinstance(sample, GNSSFix):
                print(show(sample), flush=True)
                fixes += 1
            elif isinstance(sample, LinkSample):
                last_link = f"{sample.state.value} ({sample.reason})"
                print(f"gnss link {last_link}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    stats = receiver.stats()
    _summary(fixes, stats["epochs"] - stats["fixes"], stats)
    if not fixes:
        print(
            f"telematics-agent gnss: no fix from {args.source}; link {last_link}", file=sys.stderr
        )
    return 0 if fixes else 1
