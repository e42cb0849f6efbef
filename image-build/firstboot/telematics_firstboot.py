#!/usr/bin/python3
"""First-boot provisioning: move a provisioning file from the boot partition into place.

A technician copies ``telematics/provision.toml`` and the certificates it names onto the SD card's
FAT boot partition. On boot, ``telematics-firstboot.service`` runs this script as root: it checks
that the files it names are beside it, hands it to ``telematics-agent provision --from-file``
(which validates identity, broker, certificates and key, and writes the configuration and the
secrets atomically with safe modes and owners), wipes and removes the originals from the boot
partition, and starts the agent. On any failure the files stay where they are and
``provision-error.txt`` beside them says what is wrong, so the technician can fix the card and
reboot.

Standard library only: it runs with the system python3, before anything else of ours is trusted.
``--root`` (or ``TELEMATICS_ROOT``) runs it against another root directory, for tests and images.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("telematics-firstboot")

PROVISION_FILE = "provision.toml"
ERROR_FILE = "provision-error.txt"
DONE_FILE = "provision-done.txt"
# Raspberry Pi OS Bookworm mounts the FAT partition at /boot/firmware; older images at /boot.
BOOT_DIRS = ("boot/firmware/telematics", "boot/telematics")
CONFIG_DIR = "etc/telematics-agent"
STATE_DIR = "var/lib/telematics-agent"
AGENT_BIN = "opt/telematics-agent/bin/telematics-agent"
AGENT_UNIT = "telematics-agent.service"
FIRSTBOOT_UNIT = "telematics-firstboot.service"
MAX_FILE_BYTES = 256 * 1024
PROVISION_TIMEOUT_S = 120.0
SYSTEMCTL_TIMEOUT_S = 60.0
# Keys of the provisioning file naming files on the boot partition that provisioning copies into
# /etc/telematics-agent/tls and this script then removes from the card. (The file's other keys
# are checked by `telematics-agent provision`, the one owner of that format.)
SECRET_KEYS = ("ca", "cert", "key", "password_file")


class ProvisionError(Exception):
    """The provisioning file or a file it names is unusable; the message is for the technician."""


@dataclass(frozen=True, slots=True)
class Provision:
    """A provisioning file whose secret files are all beside it on the boot partition."""

    path: Path
    device_id: str
    files: tuple[Path, ...]


def find_boot_dir(root: Path) -> Path | None:
    for rel in BOOT_DIRS:
        candidate = root / rel
        if (candidate / PROVISION_FILE).is_file():
            return candidate
    return None


def read_provision(boot_dir: Path) -> Provision:
    path = boot_dir / PROVISION_FILE
    if path.is_symlink():
        raise ProvisionError(f"{path.name}: a symbolic link, not a file")
    raw = _read_limited(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{path.name}: not valid TOML: {exc}") from exc
    files = []
    for key in SECRET_KEYS:
        if key not in data:
            continue
        if not isinstance(data[key], str):
            raise ProvisionError(f"{path.name}: key '{key}' must be a file name in quotes")
        files.append(_boot_file(boot_dir, key, data[key]))
    device_id = data.get("device_id")
    return Provision(path=path, device_id=str(device_id), files=tuple(files))


def _boot_file(boot_dir: Path, key: str, name: str) -> Path:
    # Names are relative to the provisioning directory; refusing paths keeps a crafted card from
    # making root read (and then wipe) files elsewhere on the system.
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ProvisionError(
            f"{PROVISION_FILE}: key '{key}' must name a file beside it, got {name!r}"
        )
    path = boot_dir / name
    # FAT has no symbolic links; one here means a crafted card, and wiping through it would
    # overwrite its target.
    if path.is_symlink():
        raise ProvisionError(f"{PROVISION_FILE}: key '{key}' names {name!r}, a symbolic link")
    if not path.is_file():
        raise ProvisionError(f"{PROVISION_FILE}: key '{key}' names {name!r}, which is missing")
    return path


def _read_limited(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProvisionError(f"{path.name}: cannot read: {exc.strerror}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ProvisionError(f"{path.name}: larger than {MAX_FILE_BYTES} bytes")
    return data


def provision_command(agent_bin: str, root: Path, prov: Provision) -> list[str]:
    command = [
        agent_bin, "provision",
        "--from-file", str(prov.path),
        "--config-dir", str(root / CONFIG_DIR),
        # A file on the boot partition is the technician's explicit request to (re)provision.
        "--force",
        # USB adapters may enumerate (and udev make /dev/gnss0, /dev/obd0) after this runs.
        "--allow-missing-ports",
    ]  # fmt: skip
    if root != Path("/"):
        command += ["--state-dir", str(root / STATE_DIR)]
    return command


def run_provision(command: list[str]) -> None:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PROVISION_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise ProvisionError(f"telematics-agent is not installed ({command[0]})") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProvisionError(
            f"telematics-agent provision did not finish within {exc.timeout} s"
        ) from exc
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no output")[-2000:]
        raise ProvisionError(
            f"telematics-agent provision failed (exit {result.returncode}):\n{detail}"
        )


def remove_originals(boot_dir: Path, prov: Provision) -> None:
    """Overwrite, then unlink: a FAT card passed around a depot must not keep the key readable.

    Wear levelling on SD cards means the overwrite is best effort; the unlink is what counts.
    """
    for path in [*prov.files, prov.path, boot_dir / ERROR_FILE]:
        if not path.exists():
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0" * os.fstat(fd).st_size)
                handle.flush()
                os.fsync(fd)
            path.unlink()
        except OSError as exc:
            # The device is provisioned; a read-only card only means the technician deletes it.
            logger.error("cannot remove %s from the boot partition: %s", path, exc.strerror)


def write_done(boot_dir: Path, device_id: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _write_synced(
        boot_dir / DONE_FILE,
        f"Provisioned as device {device_id} at {stamp}"
        " (system clock; may be wrong before GNSS/NTP).\n"
        "The provisioning file and certificates were removed from this card.\n",
    )


def write_error(boot_dir: Path, message: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _write_synced(
        boot_dir / ERROR_FILE,
        f"telematics-agent provisioning FAILED at {stamp} (system clock)\n\n{message}\n\n"
        "Nothing was changed on the device and these files were left in place.\n"
        "Fix the problem, then reboot (or run: systemctl start telematics-firstboot).\n",
    )


def _write_synced(path: Path, text: str) -> None:
    # The technician may pull power right after boot; make the note survive that.
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def start_agent(systemctl: str) -> None:
    # --no-block: this oneshot is ordered Before= the agent, so waiting for the agent's start job
    # from inside it would deadlock until the job timeout.
    for args in (
        ["enable", AGENT_UNIT],
        ["start", "--no-block", AGENT_UNIT],
        ["disable", FIRSTBOOT_UNIT],
    ):
        try:
            result = subprocess.run(
                [systemctl, *args],
                capture_output=True,
                text=True,
                timeout=SYSTEMCTL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.error("systemctl %s: %s", " ".join(args), exc)
            continue
        if result.returncode != 0:
            logger.error(
                "systemctl %s failed (exit %d): %s",
                " ".join(args),
                result.returncode,
                result.stderr.strip(),
            )


def provision(root: Path, agent_bin: str, systemctl: str) -> int:
    boot_dir = find_boot_dir(root)
    if boot_dir is None:
        logger.info("no %s on the boot partition; nothing to provision", PROVISION_FILE)
        return 0
    logger.info("provisioning from %s", boot_dir / PROVISION_FILE)
    try:
        prov = read_provision(boot_dir)
        run_provision(provision_command(agent_bin, root, prov))
    except ProvisionError as exc:
        logger.error("provisioning failed: %s", exc)
        try:
            write_error(boot_dir, str(exc))
        except OSError as write_exc:
            logger.error("cannot write %s: %s", boot_dir / ERROR_FILE, write_exc.strerror)
        return 1
    remove_originals(boot_dir, prov)
    write_done(boot_dir, prov.device_id)
    logger.info("provisioned device %s; starting the agent", prov.device_id)
    start_agent(systemctl)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        default=os.environ.get("TELEMATICS_ROOT", "/"),
        help="operate on this root directory (default: / or $TELEMATICS_ROOT)",
    )
    parser.add_argument(
        "--agent-bin",
        default=os.environ.get("TELEMATICS_AGENT_BIN", ""),
        help=f"telematics-agent executable (default: ROOT/{AGENT_BIN})",
    )
    parser.add_argument(
        "--systemctl",
        default=os.environ.get("TELEMATICS_SYSTEMCTL", "systemctl"),
        help="systemctl executable",
    )
    args = parser.parse_args(argv)
    # No timestamps: journald adds them; the console copy is read by a person at the van.
    logging.basicConfig(level=logging.INFO, format="telematics-firstboot: %(message)s")
    root = Path(args.root)
    agent_bin = args.agent_bin or str(root / AGENT_BIN)
    return provision(root, agent_bin, args.systemctl)


if __name__ == "__main__":
    sys.exit(main())
