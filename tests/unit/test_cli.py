"""The agent's command line: every documented subcommand is there, a broken install says so."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from agent import cli
from agent.errors import AgentError

REPO = Path(__file__).resolve().parents[2]
# ARCHITECTURE.md, "Command-line surface (stable; tests and technicians use it)".
DOCUMENTED = {"run", "check", "provision", "status", "gnss", "obd", "replay"}


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # argparse offers no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_every_documented_subcommand_is_registered() -> None:
    assert _subcommands(cli.build_parser()) == DOCUMENTED


def test_a_missing_subcommand_module_is_an_error() -> None:
    with pytest.raises(cli.InstallationError, match=r"cannot import agent\.no_such_command") as err:
        cli.build_parser((*cli.SUBCOMMAND_MODULES, "agent.no_such_command"))
    assert isinstance(err.value, AgentError)


def test_broken_install_fails_every_command_with_one_line(tmp_path: Path) -> None:
    """A copy of the package with ``agent/replay.py`` gone, as a half-written image would be."""
    shutil.copytree(
        REPO / "agent", tmp_path / "agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "agent" / "replay.py").unlink()
    # -S: no site processing, so the development install's editable finder (a .pth hook that
    # would serve agent.replay from the repository) stays out; the libraries come by path.
    path = [str(tmp_path), str(REPO), sysconfig.get_paths()["purelib"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    for argv in (["status", "--help"], ["run", "--config", str(tmp_path / "agent.toml")]):
        proc = subprocess.run(
            [sys.executable, "-S", "-m", "agent.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.splitlines() == [
            "telematics-agent: broken installation: cannot import agent.replay"
            " (No module named 'agent.replay'); reinstall telematics-agent"
        ]
        assert proc.stdout == ""
