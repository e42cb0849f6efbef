"""Check against the simulator and a real mosquitto: all pass, then the right items fail."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.check import GNSSTime, Status, probe_clock, probe_gnss
from simulator.broker import Mosquitto, free_port
from simulator.nmea import frame
from simulator.pty import PtyDevice
from tests.listener import Listener
from tests.pki import CA, Issued, make_ca, make_cert, mosquitto_tls_conf

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 6.0  # per check; the simulator gives a fix and a VIN within about 3 s
BIN = Path(sys.executable).parent


def agent_cli(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``telematics-agent ARGS`` as a real process, the way a technician runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True, text=True, timeout=timeout_s, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def check_json(config: Path, timeout_s: float = TIMEOUT_S) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    proc = agent_cli("check", "--config", str(config), "--json", "--timeout", str(timeout_s))
    elapsed_s = time.monotonic() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    return proc.returncode, doc, elapsed_s


def items(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in doc["checks"]}


@dataclass(frozen=True)
class Sim:
    gnss: str
    obd: str
    ignition: str


def _scenario(path: Path, extra: str = "") -> Path:
    # start_utc is now, so the simulated receiver's time agrees with this machine's clock.
    start = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(
        f'name = "check"\nstart_utc = "{start}"\n'
        "[route]\nwaypoints = [[51.5, -0.12], [51.501, -0.121]]\n"
        + extra
        + '[[plan]]\ndo = "idle"\nduration_s = 900\n'
    )
    return path


def _run_sim(tmp_path: Path, scenario: Path) -> Iterator[Sim]:
    proc = subprocess.Popen(
        [str(BIN / "telematics-sim"), "run", "--scenario", str(scenario), "--dir",
         str(tmp_path / "sim")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        stdout = proc.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(20.0)
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        assert ready and ready[0], f"simulator did not start: {err}"
        paths = json.loads(ready[0])
        yield Sim(paths["gnss"], paths["obd"], paths["ignition"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    yield from _run_sim(tmp_path, _scenario(tmp_path / "idle.toml"))


@dataclass(frozen=True)
class TLSBroker:
    broker: Mosquitto
    tls_port: int
    ca: CA
    client: Issued


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TLSBroker]:
    """Mutual-TLS mosquitto, plus a plain loopback listener for the test's own subscriber."""
    pki = tmp_path / "pki"
    ca = make_ca(pki, "Fleet CA")
    server = make_cert(ca, pki, "broker", server=True)
    client = make_cert(ca, pki, "van-0042")
    tls_port, plain_port = free_port(), free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    conf = mosquitto_tls_conf(tls_port, ca, server) + (
        f"listener {plain_port} 127.0.0.1\nallow_anonymous true\n"
    )
    broker = Mosquitto(workdir, port=plain_port, extra_conf=conf)
    broker.start()
    try:
        yield TLSBroker(broker, tls_port, ca, client)
    finally:
        broker.stop()


def provision(tmp_path: Path, tb: TLSBroker, sim: Sim, *extra: str) -> Path:
    config_dir = tmp_path / "etc"
    proc = agent_cli(
        "provision", "--device-id", "van-0042",
        "--broker", f"mqtts://127.0.0.1:{tb.tls_port}",
        "--ca", str(tb.ca.cert_path), "--cert", str(tb.client.cert_path),
        "--key", str(tb.client.key_path),
        "--gnss-port", sim.gnss, "--obd-port", sim.obd,
        "--ignition-backend", "simulated", "--ignition-line-file", sim.ignition,
        "--config-dir", str(config_dir), "--state-dir", str(tmp_path / "state"),
        "--owner", "nobody-here-xyz", *extra,
    )
    assert proc.returncode == 0, proc.stderr
    return config_dir / "agent.toml"


def test_everything_passes_against_the_simulator_and_a_tls_broker(
    tmp_path: Path, sim: Sim, tls_broker: TLSBroker
) -> None:
    config = provision(tmp_path, tls_broker, sim)
    topic = "fleet/v1/van-0042/check"
    listener = Listener(tls_broker.broker.host, tls_broker.broker.port, topic)
    try:
        time.sleep(0.3)  # let the subscription land before the check publishes
        rc, doc, elapsed_s = check_json(config)
        checks = items(doc)
        assert rc == 0, doc
        assert doc["ok"] is True
        assert list(checks) == [
            "config", "gnss_port", "gnss_fix", "obd_adapter", "obd_vehicle", "ignition",
            "broker", "spool", "clock",
        ]
        for name, c in checks.items():
            if name == "clock":
                # No NTP in a container; the simulated receiver's time is this machine's.
                assert c["status"] in ("pass", "warn"), c
            else:
                assert c["status"] == "pass", c
        assert "WF0EXXTTGEMA12345" in checks["obd_vehicle"]["detail"]
        assert "ISO 15765-4" in checks["obd_vehicle"]["detail"]
        assert "ignition ON" in checks["ignition"]["detail"]
        # protocol = auto, as provisioned: MQTT 5 first, as the daemon does, and mosquitto takes it.
        assert "with MQTT 5 (TLS, client certificate)" in checks["broker"]["detail"]
        assert "acknowledged" in checks["broker"]["detail"]
        assert "delivered back" in checks["broker"]["detail"]
        assert elapsed_s < 30.0
        deadline = time.monotonic() + 5.0
        while not listener.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.messages and listener.messages[0].json()["device_id"] == "van-0042"
        assert listener.messages[0].json()["nonce"]  # what the check waited to see come back
        # Nothing left retained: a subscriber arriving after the check gets no copy (mosquitto
        # sends retained messages right after the SUBACK).
        late = Listener(tls_broker.broker.host, tls_broker.broker.port, topic)
        try:
            assert not late.wait_for(bool, 1.0), late.messages
        finally:
            late.close()
    finally:
        listener.close()


@pytest.fixture
def faulty_sim(tmp_path: Path) -> Iterator[Sim]:
    """A van whose GNSS antenna sees nothing and whose OBD adapter is unplugged."""
    extra = "[gnss]\ncold_start_s = 900\n[[obd.unplug]]\nt_s = 0\nduration_s = 900\n"
    yield from _run_sim(tmp_path, _scenario(tmp_path / "faulty.toml", extra))


def test_broker_stopped_adapter_unplugged_no_fix_fail_with_the_right_hints(
    tmp_path: Path, faulty_sim: Sim, tls_broker: TLSBroker
) -> None:
    config = provision(tmp_path, tls_broker, faulty_sim, "--allow-missing-ports")
    tls_broker.broker.stop()
    rc, doc, elapsed_s = check_json(config, timeout_s=3.0)
    checks = items(doc)
    assert rc == 1 and doc["ok"] is False
    status = {name: c["status"] for name, c in checks.items()}
    assert status["config"] == "pass"
    assert status["gnss_port"] == "pass"  # NMEA flows, only without a fix
    assert status["gnss_fix"] == "fail"
    assert "antenna" in checks["gnss_fix"]["hint"]
    assert status["obd_adapter"] == "fail"
    assert "does not exist" in checks["obd_adapter"]["detail"]
    assert "plug the adapter" in checks["obd_adapter"]["hint"]
    assert status["obd_vehicle"] == "skip"
    assert status["broker"] == "fail"
    assert "connection refused" in checks["broker"]["detail"]
    assert "not running" in checks["broker"]["hint"]
    assert status["spool"] == "pass" and status["ignition"] == "pass"
    assert status["clock"] == "warn"  # no fix and no NTP: no trusted time yet
    assert elapsed_s < 3.0 + 3.0 + 5.0  # the budget plus the process's start-up


@pytest.mark.slow
def test_default_timeout_run_finishes_within_30_s(tmp_path: Path, faulty_sim: Sim) -> None:
    """The whole checklist, waiting the full default budget for a fix that never comes."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[device]\nid = "van-0042"\n[agent]\nstate_dir = "{tmp_path}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        f'[gnss]\nport = "{faulty_sim.gnss}"\n[obd]\nport = "{faulty_sim.obd}"\n'
    )
    started = time.monotonic()
    proc = agent_cli("check", "--config", str(config), "--json")
    elapsed_s = time.monotonic() - started
    assert proc.returncode == 1
    assert items(json.loads(proc.stdout))["gnss_fix"]["status"] == "fail"
    assert elapsed_s < 30.0


# --- one fault at a time, without the simulator -----------------------------------------------


def _config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    base: dict[str, dict[str, Any]] = {
        "device": {"id": "van-0042"},
        "agent": {"state_dir": str(tmp_path)},
        "gnss": {"enabled": False},
        "obd": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        if name == "tls":
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    if "tls" in base:
        lines.append("[mqtt.tls]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in base["tls"].items()]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_config_gives_a_checklist_not_a_traceback(tmp_path: Path) -> None:
    rc, doc, _ = check_json(tmp_path / "nope.toml", timeout_s=1.0)
    checks = items(doc)
    assert rc == 2 and doc["ok"] is False
    assert checks["config"]["status"] == "fail"
    assert "not found" in checks["config"]["detail"] and "provision" in checks["config"]["hint"]
    assert {c["status"] for n, c in checks.items() if n != "config"} == {"skip"}


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nid = "van-0042"\n[mqtt]\nport = "eighty"\n')
    rc, doc, _ = check_json(path, timeout_s=1.0)
    assert rc == 2
    assert "mqtt.port" in items(doc)["config"]["detail"]


def _broker_item(config: Path, timeout_s: float = 3.0) -> dict[str, str]:
    rc, doc, _ = check_json(config, timeout_s=timeout_s)
    assert rc == 1, doc
    return items(doc)["broker"]


def test_broker_with_an_untrusted_certificate(tmp_path: Path, tls_broker: TLSBroker) -> None:
    other = make_ca(tmp_path / "other", "Other CA")
    c = tls_broker.client
    config = _config(
        tmp_path, mqtt={"host": "127.0.0.1", "port": tls_broker.tls_port},
        tls={"ca_file": str(other.cert_path), "cert_file": str(c.cert_path),
             "key_file": str(c.key_path)},
    )
    item = _broker_item(config)
    assert "not trusted" in item["detail"] and "ca_file" in item["hint"]


def test_broker_refuses_a_client_certificate_from_another_ca(
    tmp_path: Path, tls_broker: TLSBroker
) -> None:
    stranger = make_cert(make_ca(tmp_path / "other", "Other CA"), tmp_path, "van-0042")
    config = _config(
        tmp_path, mqtt={"host": "127.0.0.1", "port": tls_broker.tls_port},
        tls={"ca_file": str(tls_broker.ca.cert_path), "cert_file": str(stranger.cert_path),
             "key_file": str(stranger.key_path)},
    )
    item = _broker_item(config)
    assert "rejected this client's TLS identity" in item["detail"], item
    assert "client certificate" in item["hint"]


def test_broker_refuses_authentication(tmp_path: Path) -> None:
    port = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir, port=port,
                       extra_conf=f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    broker.start()
    try:
        config = _config(tmp_path, mqtt={"host": "127.0.0.1", "port": port})
        item = _broker_item(config)
        # The same run as a technician reads it: one line per item, hints under failures.
        text = agent_cli("check", "--config", str(config), "--timeout", "2")
    finally:
        broker.stop()
    assert "refused the connection" in item["detail"], item
    assert "authentication" in item["hint"]
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.split()[:2] == ["FAIL", "broker"])
    assert "refused the connection" in lines[failed]
    assert lines[failed + 1].strip().startswith("hint: ")
    assert any(line.split()[:2] == ["PASS", "config"] for line in lines)
    assert lines[-1].startswith("result: FAIL: 1 failed")


def test_broker_username_and_password_over_mqtt5(tmp_path: Path) -> None:
    """Credentials pass (MQTT 5 here; 3.1.1 everywhere else); a wrong password fails."""
    passwords = tmp_path / "mosquitto.passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "van-0042", "s3cret"],
        check=True, capture_output=True, timeout=30,
    )
    passwords.chmod(0o644)
    port = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir, port=port, extra_conf=(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwords}\n"
    ))
    secret = tmp_path / "password"
    broker.start()
    try:
        secret.write_text("s3cret\n")  # the trailing newline an editor adds is not part of it
        config = _config(
            tmp_path, mqtt={"host": "127.0.0.1", "port": port, "protocol": "5",
                            "username": "van-0042", "password_file": str(secret)},
        )
        rc, doc, _ = check_json(config, timeout_s=3.0)
        assert rc == 0, doc
        assert items(doc)["broker"]["status"] == "pass"
        assert "(plain MQTT, no TLS, user van-0042)" in items(doc)["broker"]["detail"]
        secret.write_text("wrong\n")
        item = _broker_item(config)
    finally:
        broker.stop()
    assert "refused the connection" in item["detail"], item
    assert "username" in item["hint"] and "password" in item["hint"]


def test_broker_host_that_does_not_resolve(tmp_path: Path) -> None:
    item = _broker_item(_config(tmp_path, mqtt={"host": "broker.invalid", "port": 8883}))
    assert "cannot resolve" in item["detail"] and "mqtt.host" in item["hint"]


def test_broker_port_that_never_answers(tmp_path: Path) -> None:
    with socket.socket() as silent:
        # Accepts TCP connections (the kernel's backlog) and never says a word: a black hole.
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        item = _broker_item(
            _config(tmp_path, mqtt={"host": "127.0.0.1", "port": port}), timeout_s=1.5
        )
        assert time.monotonic() - started < 15.0
    assert "no CONNACK" in item["detail"], item


def test_spool_directory_unusable_and_disk_too_small(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = _config(tmp_path, agent={"state_dir": str(blocker)}, mqtt={"port": free_port()})
    _, doc, _ = check_json(config, timeout_s=1.0)
    spool = items(doc)["spool"]
    assert spool["status"] == "fail" and "is not a directory" in spool["detail"]
    config = _config(tmp_path, spool={"max_bytes": 10**18}, mqtt={"port": free_port()})
    _, doc, _ = check_json(config, timeout_s=1.0)
    spool = items(doc)["spool"]
    assert spool["status"] == "fail" and "not enough room" in spool["detail"]
    assert "spool.max_bytes" in spool["hint"]
    assert not list(tmp_path.glob(".check-*"))  # the probe database was cleaned up


def test_ignition_line_levels(tmp_path: Path) -> None:
    line = tmp_path / "ignition"
    config = _config(
        tmp_path, ignition={"backend": "simulated", "line_file": str(line)},
        mqtt={"port": free_port()},
    )
    line.write_text("0\n")
    ig = items(check_json(config, timeout_s=1.0)[1])["ignition"]
    assert ig["status"] == "pass" and "ignition OFF" in ig["detail"] and "optocoupler" in ig["hint"]
    line.write_text("banana")
    ig = items(check_json(config, timeout_s=1.0)[1])["ignition"]
    assert ig["status"] == "fail" and "must be 0 or 1" in ig["detail"]
    line.unlink()
    ig = items(check_json(config, timeout_s=1.0)[1])["ignition"]
    assert ig["status"] == "fail" and "cannot read" in ig["detail"]


def test_ignition_gpio_chip_that_does_not_exist(tmp_path: Path) -> None:
    config = _config(
        tmp_path, ignition={"backend": "gpiod", "chip": str(tmp_path / "gpiochip9"), "pin": 17},
        mqtt={"port": free_port()},
    )
    ig = items(check_json(config, timeout_s=1.0)[1])["ignition"]
    assert ig["status"] == "fail" and "no GPIO chip" in ig["detail"], ig
    assert "ignition.chip" in ig["hint"]


def test_obd_adapter_that_stays_silent(tmp_path: Path) -> None:
    """A serial port with nothing answering behind it: not an ELM327, or one without power."""
    dev = PtyDevice(tmp_path / "obd0")
    dev.plug()
    try:
        config = _config(tmp_path, obd={"enabled": True, "port": str(dev.link_path)},
                         mqtt={"port": free_port()})
        started = time.monotonic()
        o = items(check_json(config, timeout_s=2.0)[1])
        assert time.monotonic() - started < 2.0 + 3.0 + 5.0
    finally:
        dev.unplug()
    assert o["obd_adapter"]["status"] == "fail", o["obd_adapter"]
    assert o["obd_adapter"]["detail"].startswith(str(dev.link_path))
    assert "obd.baud" in o["obd_adapter"]["hint"] and "powered" in o["obd_adapter"]["hint"]
    assert o["obd_vehicle"]["status"] == "skip"


def test_gnss_bytes_at_the_wrong_speed(tmp_path: Path) -> None:
    dev = PtyDevice(tmp_path / "gnss0")
    dev.plug()
    stop = threading.Event()

    def noise() -> None:
        # What a 9600-baud receiver looks like to a port set to another speed: no '$', no EOL.
        while not stop.wait(0.05):
            dev.write(bytes([0x8F, 0xF3, 0x1C, 0x9E, 0xE0, 0x80, 0xFC]) * 20)

    t = threading.Thread(target=noise, daemon=True)
    t.start()
    try:
        config = _config(tmp_path, gnss={"enabled": True, "port": str(dev.link_path)},
                         mqtt={"port": free_port()})
        g = items(check_json(config, timeout_s=2.0)[1])
    finally:
        stop.set()
        t.join(2.0)
        dev.unplug()
    assert g["gnss_port"]["status"] == "fail", g["gnss_port"]
    assert "no NMEA sentence" in g["gnss_port"]["detail"] and "gnss.baud" in g["gnss_port"]["hint"]
    assert g["gnss_fix"]["status"] == "skip"


def test_gga_only_receiver_fails_the_fix_with_its_own_hint_until_the_clock_is_synced(
    tmp_path: Path,
) -> None:
    dev = PtyDevice(tmp_path / "gnss0")
    dev.plug()
    stop = threading.Event()

    def gga_only() -> None:
        # A receiver with RMC switched off: a good fix every 0.2 s, times but no date.
        while not stop.wait(0.2):
            now = dt.datetime.now(dt.UTC)
            body = f"GPGGA,{now:%H%M%S}.00,5130.000,N,00007.200,W,1,08,0.9,40.0,M,46.9,M,,"
            dev.write(frame(body).encode())

    t = threading.Thread(target=gga_only, daemon=True)
    t.start()
    try:
        cfg = agent_config.load(_config(
            tmp_path, gnss={"enabled": True, "port": str(dev.link_path)}, mqtt={"port": 1}
        ))
        unsynced, _ = probe_gnss(cfg, 2.0, date_hint=lambda: None)
        synced, gnss_time = probe_gnss(cfg, 2.0, date_hint=lambda: dt.datetime.now(dt.UTC))
    finally:
        stop.set()
        t.join(2.0)
        dev.unplug()
    port, fix = unsynced
    assert port.status is Status.PASS and "NMEA flowing" in port.detail, port
    assert fix.status is Status.FAIL and "no date yet" in fix.detail, fix
    assert "RMC" in fix.hint and "NTP" in fix.hint, fix
    assert [r.status for r in synced] == [Status.PASS, Status.PASS], synced
    assert gnss_time is not None
    assert abs((gnss_time.fix_utc - gnss_time.system_utc).total_seconds()) < 2.0


def test_clock_item_from_gnss_time() -> None:
    now = dt.datetime.now(dt.UTC)
    assert probe_clock(True, None).status is Status.PASS
    agree = probe_clock(None, GNSSTime(now, now + dt.timedelta(seconds=0.4)))
    assert agree.status is Status.PASS and "agrees with GNSS" in agree.detail
    off = probe_clock(False, GNSSTime(now, now - dt.timedelta(days=3)))
    assert off.status is Status.WARN and "NTP not synchronized" in off.detail
    assert "set_system_clock" in off.hint
    assert probe_clock(None, None).status is Status.WARN
