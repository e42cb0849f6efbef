"""Command line: `telematics-agent run|check|provision|status|gnss|obd|replay`."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from agent import __version__
from agent.errors import AgentError, ConfigError

logger = logging.getLogger("agent")

# Subcommands living in their own modules: each has add_parser(subparsers) and run(args).
SUBCOMMAND_MODULES = (
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


class InstallationError(AgentError):
    """A module of the package is missing or cannot be imported: the installation is broken."""


def build_parser(modules: Sequence[str] = SUBCOMMAND_MODULES) -> argparse.ArgumentParser:
    """The parser of every subcommand; raises ``InstallationError`` if one cannot be imported.

    Every subcommand ships in the same package, so a missing module is a corrupt install
    (a half-written image, a file deleted by hand), never an optional part. Leaving the
    command out would show the technician "invalid choice: 'check'" instead of the cause.
    """
    parser = argparse.ArgumentParser(
        prog="telematics-agent",
        description="Edge telematics agent: GNSS, OBD-II, fleet events, store-and-forward MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"telematics-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="configuration file (TOML)")
    run.set_defaults(func=_run)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # Also a dependency missing from the image (exc.name names it): same remedy.
            raise InstallationError(
                f"broken installation: cannot import {name} ({exc}); reinstall telematics-agent"
            ) from None
        module.add_parser(sub)
    return parser


class EarlyStop:
    """SIGTERM/SIGINT received while the daemon is still starting (imports, opening the spool).

    systemd may stop us at any moment. Until the daemon installs its own handlers, the request
    is remembered instead of killing the process by the default action (no clean stop, exit
    status -15); the daemon is then told to stop as soon as it exists, and exits 0.
    """

    def __init__(self) -> None:
        self.requested = False
        self._daemon: Any = None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.requested = True
        if self._daemon is not None:
            self._daemon.request_stop()

    def attach(self, daemon: Any) -> None:
        self._daemon = daemon
        if self.requested:
            daemon.request_stop()


def _run(args: argparse.Namespace) -> int:
    early: EarlyStop = args.early_stop
    from agent import config
    from agent.daemon import Daemon

    cfg = config.load(args.config)
    setup_logging(cfg.agent.log_level)
    daemon = Daemon(cfg)
    early.attach(daemon)
    return daemon.run()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # First thing, before the subcommands' imports: see EarlyStop.
    early = EarlyStop() if words[:1] == ["run"] else None
    setup_logging()
    try:
        parser = build_parser()
    except InstallationError as exc:
        print(f"telematics-agent: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(words)
    args.early_stop = early
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
