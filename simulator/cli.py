"""Command line: ``telematics-sim run|record|truth|list`` (entry point ``simulator.cli:main``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from simulator.capture import record_capture
from simulator.elm327 import VARIANTS, ELM327Server
from simulator.ignition import IgnitionLine
from simulator.model import DT_S, LiveVehicle, RouteError, VehicleModel
from simulator.nmea import Talker
from simulator.playback import Channel, Playback
from simulator.pty import PtyDevice
from simulator.scenario import Scenario, ScenarioError, bundled_names, load_scenario
from simulator.talker import GNSSTalker, Receiver
from simulator.truth import derive_truth, write_truth

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
UART_BAUDS = (4800, 9600, 19200, 38400, 57600, 115200)  # what GNSS receivers ship with
GARBAGE_ON_DEMAND_BYTES = 64  # SIGUSR1
BAD_CHECKSUMS_ON_DEMAND = 3  # SIGUSR2


class UsageError(Exception):
    """Bad command-line input or scenario: printed as one line, exit status 2."""


def _number_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number from ``low`` to ``high``, with a one-line error otherwise."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


_time_scale = _number_in(1.0, 60.0)
_gnss_hz = _number_in(1.0, 10.0)
_latency_ms = _number_in(0.0, 5000.0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telematics-sim", description=__doc__)
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--scenario",
            required=True,
            help="scenario TOML file, or the name of a bundled scenario",
        )
        sub.add_argument("--seed", type=int, default=None, help="noise seed (default: scenario's)")
        sub.add_argument("--gnss-hz", type=_gnss_hz, default=1.0, help="NMEA epochs per second")
        sub.add_argument("--talker", choices=[t.value for t in Talker], default="GP")
        sub.add_argument("--elm-variant", choices=sorted(VARIANTS), default="v1.5")
        sub.add_argument("--truth", type=Path, default=None, help="write ground truth here")

    run = commands.add_parser("run", help="start a simulated van on pseudo-terminals")
    common(run)
    run.add_argument("--time-scale", type=_time_scale, default=1.0)
    run.add_argument("--elm-latency-ms", type=_latency_ms, default=30.0)
    run.add_argument("--dir", type=Path, default=None, help="run directory (default: a temp dir)")
    run.add_argument(
        "--gnss-baud",
        type=int,
        choices=UART_BAUDS,
        default=None,
        help="give the receiver a real UART at this speed: a reader set to another speed gets"
        " garbage (default: a plain pseudo-terminal, which ignores the speed)",
    )
    run.add_argument("--hold", action="store_true", help="keep the devices alive after the end")

    record = commands.add_parser("record", help="write the drive as a capture file, fast")
    common(record)
    record.add_argument("--out", type=Path, required=True)

    truth = commands.add_parser("truth", help="print (or write) a scenario's ground truth")
    truth.add_argument("--scenario", required=True)
    truth.add_argument("--out", type=Path, default=None)

    commands.add_parser("list", help="list the bundled scenarios")
    return parser


def _load(name: str) -> tuple[Scenario, VehicleModel]:
    try:
        scenario = load_scenario(name)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    try:
        return scenario, VehicleModel(scenario)
    except RouteError as exc:
        raise UsageError(f"{scenario.path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "list":
            for name in bundled_names():
                print(name)
            return 0
        if args.command == "truth":
            _, model = _load(args.scenario)
            events = derive_truth(model)
            if args.out is None:
                sys.stdout.write("".join(e.to_json() + "\n" for e in events))
            else:
                write_truth(events, args.out)
            return 0
        if args.command == "record":
            return _record(args)
        return _run(args)
    except UsageError as exc:
        print(f"telematics-sim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"telematics-sim: error: {exc}", file=sys.stderr)
        return 1


def _record(args: argparse.Namespace) -> int:
    scenario, model = _load(args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    summary = record_capture(
        model, args.out, seed, args.gnss_hz, Talker(args.talker), args.elm_variant
    )
    if args.truth is not None:
        write_truth(derive_truth(model), args.truth)
    print(
        json.dumps(
            {
                "capture": str(summary.path),
                "records": summary.records,
                "gnss": summary.gnss_records,
                "obd": summary.obd_records,
                "duration_s": round(summary.duration_s, 1),
                "scenario": scenario.name,
                "truth": None if args.truth is None else str(args.truth),
            }
        ),
        flush=True,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    scenario, model = _load(args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    created_dir = args.dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="telematics-sim-")) if created_dir else args.dir
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    receiver = Receiver(scenario.gnss, Talker(args.talker), args.gnss_hz, seed)

    def on_fault(signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGUSR1:
            receiver.inject(garbage_bytes=GARBAGE_ON_DEMAND_BYTES)
        else:
            receiver.inject(bad_checksums=BAD_CHECKSUMS_ON_DEMAND)

    signal.signal(signal.SIGUSR1, on_fault)
    signal.signal(signal.SIGUSR2, on_fault)

    # The truth of a live run is what its devices played, and when (see simulator.playback);
    # it is written at the end, or at the stop.
    playback = Playback(derive_truth(model))
    ignition = IgnitionLine(run_dir / "ignition")
    ignition.set(model.ignition[0])
    playback.show(Channel.IGNITION, 0.0, 0.0)  # before the clock starts
    live = LiveVehicle(model, args.time_scale)
    gnss = GNSSTalker(
        model,
        live,
        PtyDevice(run_dir / "gnss0", baud=args.gnss_baud),
        receiver,
        shown=lambda t_s, now_s: playback.show(Channel.GNSS, t_s, now_s),
    )
    obd = ELM327Server(live, run_dir / "obd0", args.elm_variant, args.elm_latency_ms / 1000.0)
    try:
        gnss.start()
        obd.start()
        print(
            json.dumps(
                {
                    "gnss": str(run_dir / "gnss0"),
                    "obd": str(run_dir / "obd0"),
                    "ignition": str(run_dir / "ignition"),
                    "truth": None if args.truth is None else str(args.truth),
                    "time_scale": args.time_scale,
                    "pid": os.getpid(),
                    "scenario": scenario.name,
                }
            ),
            flush=True,
        )
        _drive(model, live, ignition, playback, stop)
        if args.hold:
            while not stop.wait(1.0):
                pass
    finally:
        end_s = live.now_s()
        playback.show(Channel.OBD, end_s, end_s)  # the adapter answered until now
        gnss.stop()
        obd.stop()
        ignition.remove()
        if args.truth is not None:
            write_truth(playback.events(), args.truth)
            logger.info(
                "truth: %d events played, %d not reached; largest delay %s",
                len(playback.events()),
                playback.unplayed(),
                ", ".join(f"{c} {d:.2f} s" for c, d in playback.max_delay_s.items()),
            )
        if created_dir:
            for leftover in run_dir.iterdir():
                if leftover.is_symlink():
                    leftover.unlink()
            try:
                run_dir.rmdir()
            except OSError:
                logger.warning("run directory %s not empty; left in place", run_dir)
    logger.info(
        "done: %d GNSS epochs written, %d OBD commands served",
        gnss.epochs_written,
        obd.commands_served,
    )
    return 0


def _drive(
    model: VehicleModel,
    live: LiveVehicle,
    ignition: IgnitionLine,
    playback: Playback,
    stop: threading.Event,
) -> None:
    """Follow the scenario in scaled real time: drive the ignition line until the end.

    The adapter answers each request with the state of that moment, so what it shows is simply
    the clock: this loop reports it to ``playback`` as it goes, along with the line's changes.
    """
    changes = [
        (k * DT_S, model.ignition[k])
        for k in range(1, model.n)
        if model.ignition[k] != model.ignition[k - 1]
    ]
    changes.append((model.duration_s, model.ignition[-1]))
    for t_s, level in changes:
        while not stop.is_set():
            now_s = live.now_s()
            playback.show(Channel.OBD, now_s, now_s)
            remaining_s = t_s - now_s
            if remaining_s <= 0:
                break
            stop.wait(min(remaining_s / live.time_scale, 0.5))
        if stop.is_set():
            return
        ignition.set(level)
        playback.show(Channel.IGNITION, t_s, live.now_s())


if __name__ == "__main__":
    sys.exit(main())
