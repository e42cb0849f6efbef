"""`telematics-agent gnss` as a technician runs it: a real process on a capture and on a pty."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

from simulator.nmea import Epoch, Talker, encode_epoch, frame
from simulator.pty import PtyDevice

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
KEYS = ["utc", "lat", "lon", "alt_m", "speed_mps", "course_deg", "mode", "sats", "hdop"]


def gnss(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "gnss", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_capture_file_json_has_exactly_the_documented_keys() -> None:
    result = gnss("--source", str(CAPTURES / "mtk-3301.nmea"), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4
    for record in records:
        assert list(record) == KEYS
        assert record["mode"] in (2, 3)
        dt.datetime.fromisoformat(record["utc"].replace("Z", "+00:00"))
    last = records[-1]
    # The 2D fix: the receiver gave no real altitude, and no PDOP-era fields are invented.
    assert last["mode"] == 2 and last["alt_m"] is None
    assert last["utc"] == "2028-04-08T08:14:39.000Z"
    assert abs(last["lat"] - 52.216363867) < 1e-6
    assert "4 fixes, 7 epochs without a fix" in result.stderr


def test_null_where_the_receiver_did_not_say() -> None:
    result = gnss("--source", str(CAPTURES / "gr8013-w.nmea"), "--json")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records and all(r["course_deg"] is None for r in records)  # u-blox: empty course


def test_hostile_file_gives_a_clear_exit_not_a_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nmea"
    junk.write_bytes(bytes(range(256)) * 50 + b"$GPRMC,,,,\r\n$$$$\x00*ZZ\r\n")
    result = gnss("--source", str(junk), "--json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "0 fixes" in result.stderr


def test_pty_source_prints_live_fixes(tmp_path: Path) -> None:
    device = PtyDevice(tmp_path / "gnss0")
    device.plug()
    stop = threading.Event()

    def talk() -> None:
        n = 0
        while not stop.wait(0.1):
            utc = dt.datetime(2025, 6, 2, 8, 0, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=n / 10)
            epoch = Epoch(
                utc=utc,
                fix=True,
                lat=52.5,
                lon=13.4,
                alt_m=40.0,
                speed_knots=5.0,
                course_deg=10.0,
                used_prns=(2, 5, 7, 9),
                hdop=1.2,
                pdop=2.0,
            )
            device.write("".join(frame(b) for b in encode_epoch(Talker.GN, epoch)).encode())
            n += 1

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    try:
        result = gnss(
            "--source", str(device.link_path), "--json", "--count", "3", "--timeout-s", "10"
        )
    finally:
        stop.set()
        thread.join(5.0)
        device.unplug()
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    assert all(list(r) == KEYS and r["sats"] == 4 and r["hdop"] == 1.2 for r in records)
    assert "gnss link up" in result.stderr


def test_missing_port_fails_with_the_reason(tmp_path: Path) -> None:
    result = gnss("--source", str(tmp_path / "nothing"), "--timeout-s", "1")
    assert result.returncode == 1
    assert "cannot open" in result.stderr and "Traceback" not in result.stderr
