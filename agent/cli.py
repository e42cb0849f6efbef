"""Command line: `telematics-agent run|check|provision|status|gnss|obd|replay`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import AgentError, ConfigError

logger = logging.getLogger("agent")

# Subcommands living in their own modules: each has add_parser(subparsers) and run(args).
_MODULES = (
    "agent.check",
    "agent.provision",
    "agent.status",
    "agent.cli_gnss",
    "agent.cli_obd",
    "agent.replay",
)


def setup_logging(level: str = "info") -> None:
    """Log to stderr without timestamps (journald adds them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that log chatter at INFO (persist-queue's import notes, python-obd's probing),
    # and pint, which warns at every start that python-obd redefines its percent units.
    for noisy in ("persistqueue", "obd"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("pint").setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="telematics-agent",
        description="Edge telematics agent: GNSS, OBD-II, fleet events, store-and-forward MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"telematics-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="configuration file (TOML)")
    run.set_defaults(func=_run)
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.daemon import Daemon

    cfg = config.load(args.config)
    setup_logging(cfg.agent.log_level)
    return Daemon(cfg).run()


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"telematics-agent: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"telematics-agent: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
