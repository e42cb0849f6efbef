"""`make demo` as a user runs it: ``python -m agent.demo``, a real mosquitto, simulator and agent.

The demo prints the PID of everything it starts; the tests check those are really its children
while it runs, and that none of them is left when it has exited (after its time is up, and after
a Ctrl-C, which a terminal sends to the whole foreground process group). A listener on the demo's
broker validates everything the demo's agent publishes against the contract.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.listener import Listener

REPO = Path(__file__).resolve().parents[2]
FIRST_LINE_S = 15.0
# A readable position line of the live view: "08:00:03  live    51.33999,12.37001  0 km/h ..."
POSITION_LINE = re.compile(r"^\d{2}:\d{2}:\d{2}  (live|pos) .*-?\d{1,3}\.\d{5},-?\d{1,3}\.\d{5}")
BROKER_LINE = re.compile(r"^demo: mosquitto on 127\.0\.0\.1:(\d+) \(pid (\d+)\)")
CHILD_LINES = {
    "mosquitto": BROKER_LINE,
    "simulator": re.compile(r"^demo: simulated van .* \(pid (\d+)\)"),
    "agent": re.compile(r"^demo: agent running \(pid (\d+)\)"),
}


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


class Demo:
    """``python -m agent.demo`` in its own session (as a terminal's foreground job), its output
    collected line by line with the time each line arrived."""

    def __init__(self, tmp_path: Path, seconds: float) -> None:
        env = {
            **os.environ,
            "DEMO_SECONDS": str(seconds),
            "TMPDIR": str(tmp_path),  # the demo leaves its files in a mkdtemp directory
            "PYTHONUNBUFFERED": "1",
        }
        self.stderr_path = tmp_path / "demo.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.demo"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
                self._cond.notify_all()

    def wait_line(self, pattern: re.Pattern[str], until: float) -> re.Match[str] | None:
        """The first output line matching ``pattern``, waiting until the monotonic ``until``."""
        with self._cond:
            while True:
                for _, line in self.lines:
                    m = pattern.match(line)
                    if m:
                        return m
                left = until - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(min(left, 0.2))

    def first_at(self, pattern: re.Pattern[str]) -> float | None:
        """Seconds from the start to the first line matching ``pattern``."""
        with self._cond:
            return next((t - self.started for t, line in self.lines if pattern.match(line)), None)

    def output(self) -> str:
        with self._cond:
            text = "\n".join(line for _, line in self.lines)
        return f"{text}\n--- stderr ---\n{self.stderr_path.read_text(errors='replace')[-3000:]}"

    def children(self) -> dict[str, tuple[int, int]]:
        """name -> (pid, start time) for everything the demo says it started, checked in /proc
        to be its running child (a PID alone could be reused after the process is gone)."""
        out: dict[str, tuple[int, int]] = {}
        deadline = time.monotonic() + FIRST_LINE_S
        for name, pattern in CHILD_LINES.items():
            m = self.wait_line(pattern, deadline)
            assert m, f"the demo did not say it started the {name}:\n{self.output()}"
            pid = int(m.group(m.lastindex or 1))
            stat = _stat(pid)
            assert stat is not None and stat[0] != "Z", f"{name} (pid {pid}) is not running"
            assert stat[1] == self.proc.pid, f"{name} (pid {pid}) is not the demo's child"
            out[name] = (pid, stat[2])
        return out

    def kill(self) -> None:
        """Whatever a failed test leaves: the demo's process group, by its id."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _left_running(children: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Those children still alive: same PID and start time, and not a zombie."""
    left = {}
    for name, (pid, started) in children.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[0] != "Z":
            left[name] = pid
    return left


def _kill_left(children: dict[str, tuple[int, int]]) -> None:
    for pid in _left_running(children).values():
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[list[Demo]]:
    runs: list[Demo] = []
    yield runs
    for run in runs:
        run.kill()


def _watch(demo: Demo) -> Listener:
    """A contract-checking listener on the demo's own broker."""
    m = demo.wait_line(BROKER_LINE, time.monotonic() + FIRST_LINE_S)
    assert m, demo.output()
    return Listener("127.0.0.1", int(m.group(1)), "#", client_id="demo-test-listener")


def test_the_demo_shows_positions_within_15_s_and_stops_everything_it_started(
    tmp_path: Path, demo_factory: list[Demo]
) -> None:
    seconds = 15.0
    demo = Demo(tmp_path, seconds)
    demo_factory.append(demo)
    sub = _watch(demo)
    children = demo.children()
    try:
        line = demo.wait_line(POSITION_LINE, demo.started + FIRST_LINE_S)
        assert line, f"no live or pos line within {FIRST_LINE_S} s:\n{demo.output()}"
        rc = demo.proc.wait(seconds + 30.0)
        left = _left_running(children)
    finally:
        _kill_left(children)
    assert rc == 0, demo.output()
    assert not left, f"still running after the demo exited: {left}\n{demo.output()}"
    took = demo.first_at(POSITION_LINE)
    assert took is not None and took <= FIRST_LINE_S
    assert "demo: stopped everything it started" in demo.output()
    sub.close()  # validates every message the demo's agent published
    kinds = {m.topic.rsplit("/", 1)[-1] for m in sub.messages}
    assert {"state", "live"} <= kinds, kinds


def test_ctrl_c_stops_the_demo_and_everything_it_started(
    tmp_path: Path, demo_factory: list[Demo]
) -> None:
    demo = Demo(tmp_path, 120.0)
    demo_factory.append(demo)
    children = demo.children()
    try:
        assert demo.wait_line(POSITION_LINE, demo.started + FIRST_LINE_S), demo.output()
        # What a terminal does on Ctrl-C: SIGINT to every process of the foreground job.
        os.killpg(demo.proc.pid, signal.SIGINT)
        rc = demo.proc.wait(30.0)
        left = _left_running(children)
    finally:
        _kill_left(children)
    assert rc == 0, demo.output()
    assert not left, f"still running after the demo exited: {left}\n{demo.output()}"
    assert "demo: stopped everything it started" in demo.output()
