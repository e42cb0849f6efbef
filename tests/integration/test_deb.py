"""The .deb: built by image-build/build-deb.sh, installed silently into a clean bookworm root.

A fresh minbase root comes from debootstrap and Debian's archive; apt installs the package and its
dependencies inside it with a chroot. Needs root, debootstrap and network to deb.debian.org; the
test fails (never skips) without them, since CI must run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MIRROR = "http://deb.debian.org/debian"
CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(command: list[str], timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def in_root(
    root: Path, command: list[str], timeout_s: float = 120.0, **env: str
) -> subprocess.CompletedProcess[str]:
    # env -i: nothing from the test runner's environment (its venv, its PATH) leaks into the root.
    assignments = [f"{key}={value}" for key, value in {**CHROOT_ENV, **env}.items()]
    return run(["chroot", str(root), "env", "-i", *assignments, *command], timeout_s)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


def check_report(root: Path, *args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """``telematics-agent check --json`` in the root: exit status and the items by name."""
    result = in_root(root, ["telematics-agent", "check", "--json", *args])
    assert "Traceback" not in result.stderr, result.stderr
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"check --json printed no JSON ({exc}):\n{result.stdout}\n{result.stderr}"
        ) from exc
    assert report["ok"] is (result.returncode == 0), report
    return result.returncode, {item["name"]: item for item in report["checks"]}


@pytest.fixture(scope="module")
def deb() -> Path:
    out = Path(tempfile.mkdtemp(prefix="telematics-deb-"))
    result = run(
        ["bash", str(REPO / "image-build/build-deb.sh")],
        600.0,
        env={**os.environ, "TELEMATICS_DEB_OUT": str(out)},
    )
    path = Path(ok(result).strip().splitlines()[-1])
    assert path.name.startswith("telematics-agent_") and path.suffix == ".deb", path
    return path


@pytest.fixture(scope="module")
def bookworm(deb: Path) -> Iterator[Path]:
    """A clean bookworm root with the package installed by apt, asking nothing."""
    assert os.geteuid() == 0, "this test needs root (debootstrap, chroot, mount)"
    assert shutil.which("debootstrap"), "apt-get install debootstrap"
    workdir = Path(tempfile.mkdtemp(prefix="telematics-bookworm-"))
    root = workdir / "root"
    proc = root / "proc"
    try:
        ok(run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR], 420.0))
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        shutil.copy(deb, root / "tmp" / deb.name)
        ok(run(["mount", "-t", "proc", "proc", str(proc)], 30.0))
        ok(in_root(root, ["apt-get", "update", "-qq"], 180.0))
        install = in_root(root, ["apt-get", "install", "-y", "-q", f"/tmp/{deb.name}"], 300.0)
        ok(install)
        # A question would have failed on the closed stdin; debconf would still mention it.
        assert "debconf: unable to initialize frontend" not in install.stderr
        yield root
    finally:
        if proc.is_mount() and run(["umount", str(proc)], 30.0).returncode != 0:
            run(["umount", "-l", str(proc)], 30.0)
        # Never delete through a mount point still attached to the host's /proc.
        if not proc.is_mount():
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(deb.parent, ignore_errors=True)


def test_version_runs_from_the_bundled_virtualenv(bookworm: Path) -> None:
    from agent import __version__

    out = ok(in_root(bookworm, ["telematics-agent", "--version"]))
    assert __version__ in out
    assert (bookworm / "opt/telematics-agent/bin/python").exists()


def test_check_without_config_prints_a_failing_checklist(bookworm: Path) -> None:
    code, by_name = check_report(bookworm)
    # Exit 2: the configuration is missing (a fresh install before provisioning).
    assert code == 2, by_name
    assert by_name["config"]["status"] == "fail"
    assert "/etc/telematics-agent/agent.toml" in by_name["config"]["detail"]
    assert by_name["config"]["hint"], "a technician needs to be told what to do"


def test_service_user_directories_and_enabled_unit(bookworm: Path) -> None:
    groups = ok(in_root(bookworm, ["id", "-nG", "telematics"])).split()
    assert {"telematics", "dialout", "gpio"} <= set(groups)
    assert (
        bookworm / "etc/systemd/system/multi-user.target.wants/telematics-agent.service"
    ).is_symlink()
    assert (bookworm / "lib/udev/rules.d/99-telematics.rules").is_file()
    for path, mode in (("etc/telematics-agent", 0o750), ("var/lib/telematics-agent", 0o750)):
        assert (bookworm / path).stat().st_mode & 0o777 == mode, path
    # The first-boot unit is installed but only the image build enables it.
    assert (bookworm / "lib/systemd/system/telematics-firstboot.service").is_file()
    assert not (
        bookworm / "etc/systemd/system/multi-user.target.wants/telematics-firstboot.service"
    ).exists()


def test_upgrade_offline_keeps_config_and_spool_purge_keeps_spool(
    bookworm: Path, deb: Path
) -> None:
    config = bookworm / "etc/telematics-agent/agent.toml"
    spool = bookworm / "var/lib/telematics-agent/spool.db"
    config.write_text('[device]\nid = "van-1"\n', encoding="utf-8")
    spool.write_bytes(b"undelivered")

    # Reinstalling runs prerm upgrade / postinst configure, i.e. the upgrade path; unshare -n
    # takes the network away to show the bundled wheels are all the postinst needs.
    result = run(
        ["unshare", "--net", "chroot", str(bookworm), "env", "-i",
         *[f"{key}={value}" for key, value in CHROOT_ENV.items()],
         "dpkg", "-i", f"/tmp/{deb.name}"],
        300.0,
    )  # fmt: skip
    ok(result)
    assert config.read_text(encoding="utf-8") == '[device]\nid = "van-1"\n'
    assert spool.read_bytes() == b"undelivered"
    ok(in_root(bookworm, ["telematics-agent", "--version"]))

    ok(in_root(bookworm, ["apt-get", "purge", "-y", "-q", "telematics-agent"], 120.0))
    assert not (bookworm / "etc/telematics-agent").exists()
    assert not (bookworm / "opt/telematics-agent").exists()
    assert spool.read_bytes() == b"undelivered", "purge must keep undelivered data by default"

    # Asked explicitly, purge removes the spool too.
    ok(in_root(bookworm, ["dpkg", "-i", f"/tmp/{deb.name}"], 300.0))
    ok(in_root(bookworm, ["apt-get", "purge", "-y", "-q", "telematics-agent"], 120.0,
               TELEMATICS_AGENT_PURGE_SPOOL="1"))  # fmt: skip
    assert not (bookworm / "var/lib/telematics-agent").exists()


def test_pi_gen_stage_installs_the_package_and_arms_first_boot(
    bookworm: Path, deb: Path, tmp_path: Path
) -> None:
    # pi-gen cannot run here (it builds a whole Raspberry Pi OS). Its sub-stage script can: with
    # ROOTFS_DIR and an on_chroot like pi-gen's (a shell in the chroot reading stdin), against
    # the bookworm root with the package purged first, as pi-gen's stage2 root has never seen it
    # (whatever the tests before this one left). dpkg, not apt: apt cannot name a package from
    # a local .deb once it is purged, while dpkg only warns that it is not installed.
    ok(in_root(bookworm, ["dpkg", "--purge", "telematics-agent"], 120.0,
               TELEMATICS_AGENT_PURGE_SPOOL="1"))  # fmt: skip
    wants = bookworm / "etc/systemd/system/multi-user.target.wants"
    assert not (bookworm / "opt/telematics-agent").exists()
    assert not (wants / "telematics-agent.service").exists()
    assert not (wants / "telematics-firstboot.service").exists()
    stage = tmp_path / "00-telematics"
    shutil.copytree(REPO / "image-build/pi-gen/stage-telematics/00-telematics", stage)
    shutil.copy(deb, stage / "files" / deb.name)
    (bookworm / "boot/firmware").mkdir(parents=True, exist_ok=True)
    script = (
        "on_chroot() {\n"
        '  chroot "$ROOTFS_DIR" /usr/bin/env -i PATH="$CHROOT_PATH" /bin/bash -e "$@"\n'
        "}\n"
        "export -f on_chroot\n"
        "./00-run.sh\n"
    )
    result = run(
        ["bash", "-e", "-c", script],
        300.0,
        cwd=stage,
        env={"ROOTFS_DIR": str(bookworm), "CHROOT_PATH": CHROOT_ENV["PATH"],
             "PATH": os.environ["PATH"]},
    )  # fmt: skip
    ok(result)
    ok(in_root(bookworm, ["telematics-agent", "--version"]))
    assert (wants / "telematics-firstboot.service").is_symlink()
    assert (wants / "telematics-agent.service").is_symlink()
    readme = bookworm / "boot/firmware/telematics/README.txt"
    assert "provision.toml" in readme.read_text(encoding="utf-8")
    assert not (bookworm / "tmp/telematics-agent.deb").exists()


def test_first_boot_in_the_installed_root_provisions_for_the_service_user(
    bookworm: Path, deb: Path, tmp_path: Path
) -> None:
    from tests.pki import make_ca, make_cert

    # The installed script, the installed `provision` and the root's own `telematics` user and
    # systemctl (offline: enable/disable edit symlinks; start fails without a running systemd,
    # which the script logs and survives).
    ok(in_root(bookworm, ["apt-get", "install", "-y", "-q", f"/tmp/{deb.name}"], 300.0))
    ok(in_root(bookworm, ["systemctl", "enable", "telematics-firstboot.service"]))
    boot = bookworm / "boot/firmware/telematics"
    boot.mkdir(parents=True, exist_ok=True)
    ca = make_ca(tmp_path, "Fleet CA")
    client = make_cert(ca, tmp_path, "van-7")
    shutil.copy(ca.cert_path, boot / "ca.pem")
    shutil.copy(client.cert_path, boot / "van-7.pem")
    shutil.copy(client.key_path, boot / "van-7.key")
    (boot / "provision.toml").write_text(
        'device_id = "van-7"\nbroker = "mqtts://mqtt.fleet.example:8883"\n'
        'ca = "ca.pem"\ncert = "van-7.pem"\nkey = "van-7.key"\n',
        encoding="utf-8",
    )
    result = in_root(bookworm, ["python3", "/usr/lib/telematics-agent/telematics-firstboot"])
    ok(result)
    assert "Traceback" not in result.stderr, result.stderr

    uid = int(ok(in_root(bookworm, ["id", "-u", "telematics"])).strip())
    key = (bookworm / "etc/telematics-agent/tls/client.key").stat()
    assert (key.st_uid, key.st_mode & 0o777) == (uid, 0o600)
    assert not (boot / "van-7.key").exists()
    assert (boot / "provision-done.txt").exists()
    wants = bookworm / "etc/systemd/system/multi-user.target.wants"
    assert not (wants / "telematics-firstboot.service").exists(), "first boot must disable itself"
    assert (wants / "telematics-agent.service").is_symlink()

    # The technician's next step: check. The configuration first boot wrote must pass; this
    # root has no receiver, adapter or reachable broker (mqtt.fleet.example does not resolve),
    # so those items fail, each with a hint, none with a crash.
    code, checks = check_report(bookworm, "--timeout", "3")
    assert code == 1, checks
    assert checks["config"]["status"] == "pass", checks["config"]
    assert "device van-7" in checks["config"]["detail"]
    assert "/etc/telematics-agent/agent.toml" in checks["config"]["detail"]
    assert list(checks) == [
        "config", "gnss_port", "gnss_fix", "obd_adapter", "obd_vehicle", "ignition", "broker",
        "spool", "clock",
    ]
    for name in ("gnss_port", "obd_adapter"):
        assert checks[name]["status"] == "fail", checks[name]
        assert "does not exist" in checks[name]["detail"], checks[name]
    assert checks["broker"]["status"] == "fail", checks["broker"]
    assert "mqtt.fleet.example" in checks["broker"]["detail"], checks["broker"]
    assert checks["spool"]["status"] == "pass", checks["spool"]
    for item in checks.values():
        assert item["status"] in ("pass", "fail", "warn", "skip"), item
        assert not item["detail"].startswith("the check itself failed"), item
        assert "did not finish" not in item["detail"], item
        if item["status"] in ("fail", "warn"):
            assert item["hint"], f"{item['name']}: a failure needs a hint"
