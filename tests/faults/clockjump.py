"""Clock jump: the daemon run with a system clock that a test moves by writing an offset file.

``python -m tests.faults.clockjump CONFIG OFFSET_FILE`` runs the real daemon exactly as
``telematics-agent run`` does, except that its injected clock's ``wall()`` (the only place the
system's UTC enters the agent's records) is the real UTC plus the seconds in OFFSET_FILE, re-read
at every call. Its monotonic clock is untouched, as the kernel's is when the wall clock jumps.

libfaketime would do this from outside, but 0.9.10 (Debian bookworm) breaks Python 3.11's
``time.sleep`` when the monotonic clock is left unfaked (clock_nanosleep with TIMER_ABSTIME gets
a negative time: wolfcw/libfaketime#426), so the jump enters through the agent's clock seam.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from agent.clock import SystemClock


class JumpingClock(SystemClock):
    def __init__(self, scale: float, offset_file: Path) -> None:
        super().__init__(scale)
        self.offset_file = offset_file

    def wall(self) -> dt.datetime:
        try:
            offset_s = float(self.offset_file.read_text().strip() or 0.0)
        except (OSError, ValueError):
            offset_s = 0.0  # mid-replace or absent: no jump
        return super().wall() + dt.timedelta(seconds=offset_s)


def main(argv: list[str]) -> int:
    from agent import config
    from agent.cli import setup_logging
    from agent.daemon import Daemon
    from agent.errors import AgentError, ConfigError

    if len(argv) != 2:
        print("usage: python -m tests.faults.clockjump CONFIG OFFSET_FILE", file=sys.stderr)
        return 2
    setup_logging()
    try:
        cfg = config.load(argv[0])
        setup_logging(cfg.agent.log_level)
        clock = JumpingClock(cfg.agent.time_scale, Path(argv[1]))
        return Daemon(cfg, clock=clock).run()
    except ConfigError as exc:
        print(f"clockjump: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"clockjump: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
