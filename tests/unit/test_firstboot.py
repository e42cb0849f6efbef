"""First-boot provisioning script, run as a real process against a temporary root.

The root holds a boot partition with a provisioning file and certificates from a throwaway CA;
the real ``telematics-agent provision`` writes the configuration. systemctl is the one seam
replaced: a script that records its arguments, since the test cannot start units on the host.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pki import make_ca, make_cert, make_key

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "image-build/firstboot/telematics_firstboot.py"
AGENT_BIN = Path(sys.executable).parent / "telematics-agent"
BOOT = "boot/firmware/telematics"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    boot = root / BOOT
    boot.mkdir(parents=True)
    ca = make_ca(tmp_path / "pki", "Fleet CA")
    client = make_cert(ca, tmp_path / "pki", "van-0042")
    for source, name in ((ca.cert_path, "ca.pem"), (client.cert_path, "van-0042.pem"),
                         (client.key_path, "van-0042.key")):  # fmt: skip
        (boot / name).write_bytes(source.read_bytes())
    (boot / "provision.toml").write_text(
        'device_id = "van-0042"\n'
        'broker = "mqtts://mqtt.fleet.example:8883"\n'
        'ca = "ca.pem"\ncert = "van-0042.pem"\nkey = "van-0042.key"\n'
        'gnss_port = "/dev/gnss0"\nobd_port = "/dev/obd0"\n',
        encoding="utf-8",
    )
    return root


def firstboot(root: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    calls = root.parent / "systemctl.calls"
    systemctl = root.parent / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n', encoding="utf-8")
    systemctl.chmod(0o755)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--agent-bin", str(AGENT_BIN),
         "--systemctl", str(systemctl)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return result, lines


def test_provisions_removes_originals_and_starts_the_agent(root: Path) -> None:
    result, systemctl = firstboot(root)
    assert result.returncode == 0, result.stderr

    config = root / "etc/telematics-agent/agent.toml"
    assert 'id = "van-0042"' in config.read_text(encoding="utf-8")
    key = root / "etc/telematics-agent/tls/client.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (root / "var/lib/telematics-agent").is_dir()

    boot = root / BOOT
    assert sorted(path.name for path in boot.iterdir()) == ["provision-done.txt"]
    assert "van-0042" in (boot / "provision-done.txt").read_text(encoding="utf-8")
    # --no-block: waiting on the agent from a unit ordered before it would deadlock.
    assert systemctl == [
        "enable telematics-agent.service",
        "start --no-block telematics-agent.service",
        "disable telematics-firstboot.service",
    ]


def test_certificate_not_matching_key_leaves_everything_and_explains(
    root: Path, tmp_path: Path
) -> None:
    boot = root / BOOT
    wrong_key = make_key(tmp_path / "pki", "other")
    (boot / "van-0042.key").write_bytes(wrong_key.read_bytes())
    before = {path.name: path.read_bytes() for path in boot.iterdir()}

    result, systemctl = firstboot(root)

    assert result.returncode == 1
    assert systemctl == []
    assert not (root / "etc/telematics-agent/agent.toml").exists()
    after = {
        path.name: path.read_bytes()
        for path in boot.iterdir()
        if path.name != "provision-error.txt"
    }
    assert after == before
    error = (boot / "provision-error.txt").read_text(encoding="utf-8")
    assert "telematics-agent provision failed" in error
    assert "key" in error.lower()
    assert "provisioning failed" in result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('key = "../../../etc/shadow"', "must name a file beside it"),
        ('key = "/etc/shadow"', "must name a file beside it"),
        ('key = "absent.key"', "'absent.key', which is missing"),
        ("key = 42", "must be a file name in quotes"),
        ('key = "van-0042.key', "not valid TOML"),
    ],
)
def test_bad_provisioning_file_is_refused_before_provisioning(
    root: Path, line: str, message: str
) -> None:
    path = root / BOOT / "provision.toml"
    text = path.read_text(encoding="utf-8").replace('key = "van-0042.key"', line)
    path.write_text(text, encoding="utf-8")

    result, systemctl = firstboot(root)

    assert result.returncode == 1
    assert systemctl == []
    assert message in (root / BOOT / "provision-error.txt").read_text(encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text
    assert not (root / "etc/telematics-agent").exists()


def test_fixed_card_provisions_on_the_next_boot(root: Path, tmp_path: Path) -> None:
    boot = root / BOOT
    good_key = (boot / "van-0042.key").read_bytes()
    (boot / "van-0042.key").write_bytes(make_key(tmp_path / "pki", "other").read_bytes())
    assert firstboot(root)[0].returncode == 1

    (boot / "van-0042.key").write_bytes(good_key)
    result, systemctl = firstboot(root)

    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in boot.iterdir()) == ["provision-done.txt"]
    assert "start --no-block telematics-agent.service" in systemctl


def test_without_a_provisioning_file_nothing_happens(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot/firmware").mkdir(parents=True)
    result, systemctl = firstboot(root)
    assert result.returncode == 0
    assert systemctl == []
    assert "nothing to provision" in result.stderr
    assert not (root / "etc").exists()


def test_symbolic_link_on_the_card_is_refused_and_its_target_untouched(
    root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"do not wipe")
    key = root / BOOT / "van-0042.key"
    key.unlink()
    key.symlink_to(target)

    result, systemctl = firstboot(root)

    assert result.returncode == 1
    assert systemctl == []
    assert "symbolic link" in (root / BOOT / "provision-error.txt").read_text(encoding="utf-8")
    assert target.read_bytes() == b"do not wipe"
    assert key.is_symlink()
