"""A stop request while the daemon is still starting ends in a clean exit, not a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("delay_s", [0.08, 0.15, 0.3])
def test_sigterm_during_startup_exits_0(tmp_path: Path, delay_s: float) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n[device]\nid = "early"\n'
        "[mqtt]\nport = 1\n[gnss]\nenabled = false\n[obd]\nenabled = false\n"
    )
    proc = subprocess.Popen(
        [str(BIN / "telematics-agent"), "run", "--config", str(cfg)], stderr=subprocess.PIPE
    )
    time.sleep(delay_s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None
    assert b"Traceback" not in proc.stderr.read()
