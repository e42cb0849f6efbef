"""Provision end to end: real certificates, real files and modes, a failed run changes nothing."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.cli import main as cli_main
from simulator.pty import PtyDevice
from tests.pki import CA, Issued, make_ca, make_cert, make_key

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    """``telematics-agent provision ARGV`` in this process."""
    return cli_main(["provision", *argv])


@dataclass(frozen=True)
class Kit:
    """What a technician carries for one van: the fleet CA, the van's certificate, its ports."""

    root: Path
    ca: CA
    client: Issued
    gnss: Path
    obd: Path
    config_dir: Path

    def argv(self, *extra: str, **overrides: str) -> list[str]:
        opts = {
            "--device-id": "van-0042",
            "--broker": "mqtts://mqtt.fleet.example:8883",
            "--ca": str(self.ca.cert_path),
            "--cert": str(self.client.cert_path),
            "--key": str(self.client.key_path),
            "--gnss-port": str(self.gnss),
            "--obd-port": str(self.obd),
            "--config-dir": str(self.config_dir),
            "--state-dir": str(self.root / "state"),
            "--owner": "nobody-here-xyz",
        }
        for k, v in overrides.items():
            opts["--" + k.replace("_", "-")] = v
        out: list[str] = []
        for k, v in opts.items():
            if v:
                out += [k, v]
        return out + list(extra)


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    pki = tmp_path / "pki"
    ca = make_ca(pki, "Fleet CA")
    client = make_cert(ca, pki, "van-0042")
    gnss = PtyDevice(tmp_path / "gnss0")
    obd = PtyDevice(tmp_path / "obd0")
    gnss.plug()
    obd.plug()
    try:
        yield Kit(tmp_path, ca, client, gnss.link_path, obd.link_path, tmp_path / "etc")
    finally:
        gnss.unplug()
        obd.unplug()


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and mode."""
    out: dict[str, tuple[bytes, int]] = {}
    for p in sorted(directory.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(directory))] = (
            p.read_bytes() if p.is_file() else b"",
            stat.S_IMODE(st.st_mode),
        )
    return out


def test_good_input_writes_config_and_secrets_with_safe_modes(
    kit: Kit, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(kit.argv()) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "configured: device van-0042" in out
    assert "does not exist" in out  # the missing service user is said, not hidden

    tls = kit.config_dir / "tls"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tls.iterdir()}
    assert modes == {"ca.pem": 0o644, "client.pem": 0o644, "client.key": 0o600}
    assert stat.S_IMODE((kit.config_dir / "agent.toml").stat().st_mode) == 0o640
    assert (tls / "client.key").read_bytes() == kit.client.key_path.read_bytes()
    assert (tls / "ca.pem").read_bytes() == kit.ca.cert_path.read_bytes()
    assert not [p for p in kit.config_dir.rglob("*") if ".provision-" in p.name]

    cfg = agent_config.load(kit.config_dir / "agent.toml")
    assert cfg.device.id == "van-0042"
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("mqtt.fleet.example", 8883)
    assert cfg.mqtt.tls.key_file == str(tls / "client.key")
    assert cfg.mqtt.tls.cert_file == str(tls / "client.pem")
    assert cfg.mqtt.tls.ca_file == str(tls / "ca.pem")
    assert cfg.gnss.port == str(kit.gnss) and cfg.obd.port == str(kit.obd)
    assert cfg.agent.state_dir == str(kit.root / "state")
    assert (kit.root / "state").is_dir()


def test_secrets_belong_to_the_service_user(kit: Kit) -> None:
    """As root: secrets owned by the service user, agent.toml root-owned in its group."""
    if os.geteuid() != 0:
        rc = main(kit.argv(owner="nobody"))
        assert rc == 0 and not [
            p for p in kit.config_dir.rglob("*") if p.stat().st_uid != os.geteuid()
        ]
        return
    user = pwd.getpwnam("nobody")
    assert main(kit.argv(owner="nobody")) == 0
    tls = kit.config_dir / "tls"
    for name in ("client.key", "client.pem", "ca.pem"):
        st = (tls / name).stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid), name
    st = (kit.config_dir / "agent.toml").stat()
    assert (st.st_uid, st.st_gid) == (0, user.pw_gid)
    assert (kit.root / "state").stat().st_uid == user.pw_uid
    before = snapshot(kit.config_dir)
    assert main(kit.argv(owner="nobody")) == 0
    assert snapshot(kit.config_dir) == before


def test_second_run_with_same_inputs_changes_nothing(
    kit: Kit, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(kit.argv()) == 0
    before = snapshot(kit.config_dir)
    mtime = (kit.config_dir / "agent.toml").stat().st_mtime_ns
    capsys.readouterr()
    assert main(kit.argv()) == 0
    assert "unchanged: device van-0042" in capsys.readouterr().out
    assert snapshot(kit.config_dir) == before
    assert (kit.config_dir / "agent.toml").stat().st_mtime_ns == mtime


def test_reprovision_keeps_tuning_keys_and_replaces_certificate(kit: Kit) -> None:
    assert main(kit.argv()) == 0
    cfg_path = kit.config_dir / "agent.toml"
    cfg_path.write_text(cfg_path.read_text() + "\n[spool]\nmax_bytes = 1048576\n")
    renewed = make_cert(kit.ca, kit.root / "renewed", "van-0042")
    assert main(kit.argv(cert=str(renewed.cert_path), key=str(renewed.key_path))) == 0
    cfg = agent_config.load(cfg_path)
    assert cfg.spool.max_bytes == 1048576
    assert (kit.config_dir / "tls" / "client.pem").read_bytes() == renewed.cert_path.read_bytes()


def test_username_and_password_file(kit: Kit) -> None:
    secret = kit.root / "pw.txt"
    secret.write_text("s3cret\n")
    assert main(kit.argv("--username", "van-0042", "--password-file", str(secret))) == 0
    pw = kit.config_dir / "tls" / "password"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    assert pw.read_text() == "s3cret\n"
    cfg = agent_config.load(kit.config_dir / "agent.toml")
    assert cfg.mqtt.username == "van-0042" and cfg.mqtt.password_file == str(pw)
    # Provisioned again without a password: the old one must not linger on disk.
    assert main(kit.argv()) == 0
    assert not pw.exists()


def test_provision_file_with_relative_paths(kit: Kit) -> None:
    boot = kit.root / "boot"
    boot.mkdir()
    shutil.copy(kit.ca.cert_path, boot / "ca.pem")
    shutil.copy(kit.client.cert_path, boot / "van.pem")
    shutil.copy(kit.client.key_path, boot / "van.key")
    (boot / "provision.toml").write_text(
        'device_id = "van-0042"\nbroker = "mqtts://mqtt.fleet.example"\n'
        'ca = "ca.pem"\ncert = "van.pem"\nkey = "van.key"\n'
        f'gnss_port = "{kit.gnss}"\nobd_port = "/dev/obd-not-yet"\nallow_missing_ports = true\n'
        'ignition_backend = "gpiod"\nignition_pin = 22\n'
    )
    rc = main([
        "--from-file", str(boot / "provision.toml"), "--config-dir", str(kit.config_dir),
        "--owner", "nobody-here-xyz",
    ])
    assert rc == 0
    cfg = agent_config.load(kit.config_dir / "agent.toml")
    assert cfg.device.id == "van-0042" and cfg.mqtt.port == 8883
    assert cfg.obd.port == "/dev/obd-not-yet"
    assert (cfg.ignition.backend, cfg.ignition.pin) == ("gpiod", 22)


def test_json_output(kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(kit.argv("--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["changed"] is True
    assert doc["config"] == str(kit.config_dir / "agent.toml")


# --- bad input: a clear error, exit 2, the previous configuration byte-identical --------------


def _bad_inputs(kit: Kit) -> dict[str, tuple[list[str], str]]:
    other_ca = make_ca(kit.root / "other", "Other CA")
    return {
        "mismatched key": (
            kit.argv(key=str(make_key(kit.root, "stray"))),
            "does not belong to --cert",
        ),
        "expired cert": (
            kit.argv(**_pair(make_cert(kit.ca, kit.root / "x", "van-0042", expired=True))),
            "expired on",
        ),
        "not yet valid cert": (
            kit.argv(**_pair(make_cert(kit.ca, kit.root / "y", "van-0042", not_yet_valid=True))),
            "is not valid before",
        ),
        "wrong CA": (
            kit.argv(**_pair(make_cert(other_ca, kit.root / "z", "van-0042"))),
            "was not signed by the CA",
        ),
        "missing port": (kit.argv(obd_port=str(kit.root / "obd-missing")), "no such device"),
        "different identity": (kit.argv(device_id="van-0099"), "pass --force"),
        "bad device id": (kit.argv(device_id="van 42!"), "--device-id"),
        "plain remote broker": (
            kit.argv(broker="mqtt://mqtt.fleet.example", ca="", cert="", key=""),
            "unencrypted",
        ),
        "not a certificate": (kit.argv(cert=str(kit.client.key_path)), "not a PEM certificate"),
        "missing CA file": (kit.argv(ca=str(kit.root / "nope.pem")), "no such file"),
    }


def _pair(issued: Issued) -> dict[str, str]:
    return {"cert": str(issued.cert_path), "key": str(issued.key_path)}


def test_each_bad_input_fails_clearly_and_leaves_previous_config_untouched(
    kit: Kit, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(kit.argv()) == 0
    before = snapshot(kit.config_dir)
    capsys.readouterr()
    for case, (argv, expected) in _bad_inputs(kit).items():
        rc = main(argv)
        captured = capsys.readouterr()
        assert rc == 2, case
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("provision: error: "), (case, captured.err)
        assert expected in lines[0], (case, lines[0])
        assert "Traceback" not in captured.err
        assert snapshot(kit.config_dir) == before, case


def test_force_replaces_a_different_identity(kit: Kit) -> None:
    assert main(kit.argv()) == 0
    other = make_cert(kit.ca, kit.root / "o", "van-0099")
    assert main(kit.argv("--force", device_id="van-0099", **_pair(other))) == 0
    assert agent_config.load(kit.config_dir / "agent.toml").device.id == "van-0099"


def test_missing_port_allowed_when_asked(kit: Kit, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(kit.argv("--allow-missing-ports", obd_port=str(kit.root / "obd-later")))
    assert rc == 0
    assert "is not present now" in capsys.readouterr().out


def test_unwritable_config_directory_fails_clearly(kit: Kit) -> None:
    """A real process that may not write the directory (root ignores modes: drop that power)."""
    previous = b'[device]\nid = "van-0042"\n'
    kit.config_dir.mkdir()
    (kit.config_dir / "agent.toml").write_bytes(previous)
    kit.config_dir.chmod(0o555)
    argv = [sys.executable, "-m", "agent.cli", "provision", *kit.argv()]
    if os.geteuid() == 0:
        # Without CAP_DAC_OVERRIDE root obeys the 0555 mode like the service user would.
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs util-linux's setpriv to test permissions"
        argv = [setpriv, "--bounding-set", "-dac_override", "--", *argv]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        kit.config_dir.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("provision: error: cannot write "), proc.stderr
    assert "permission denied" in proc.stderr and "Traceback" not in proc.stderr
    assert (kit.config_dir / "agent.toml").read_bytes() == previous
    assert sorted(p.name for p in kit.config_dir.iterdir()) == ["agent.toml"]
