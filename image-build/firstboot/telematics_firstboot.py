#!/usr/bin/python3
"""First-boot provisioning: move a provisioning file from the boot partition into place.

A technician copies ``telematics/provision.toml`` and the certificates it names onto the SD card's
FAT boot partition. On boot, ``telematics-firstboot.service`` runs this script as root: it checks
the file, hands it to ``telematics-agent provision`` (which writes the configuration and the
secrets atomically with safe modes), wipes and removes the originals from the boot partition, and
starts the agent. On any failure the files stay where they are and ``provision-error.txt`` beside
them says what is wrong, so the technician can fix the card and reboot.

Standard library only: it runs with the system python3, before anything else of ours is trusted.
``--root`` (or ``TELEMATICS_ROOT``) runs it against another root directory, for tests and images.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import pwd
import re
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
AGENT_BIN = "opt/telematics-agent/bin/telematics-agent"
AGENT_UNIT = "telematics-agent.service"
FIRSTBOOT_UNIT = "telematics-firstboot.service"
SERVICE_USER = "telematics"
MAX_FILE_BYTES = 256 * 1024
PROVISION_TIMEOUT_S = 120.0
SYSTEMCTL_TIMEOUT_S = 60.0

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
BROKER_RE = re.compile(r"mqtts?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
PORT_RE = re.compile(r"(/dev/[A-Za-z0-9_./-]+|socket://[A-Za-z0-9.:-]+)")

# key -> (type, required, is a file on the boot partition)
KEYS: dict[str, tuple[type, bool, bool]] = {
    "device_id": (str, True, False),
    "broker": (str, True, False),
    "ca": (str, True, True),
    "cert": (str, True, True),
    "key": (str, True, True),
    "username": (str, False, False),
    "password_file": (str, False, True),
    "gnss_port": (str, False, False),
    "obd_port": (str, False, False),
    "ignition_pin": (int, False, False),
}
PEM_FILES = ("ca", "cert", "key")


class ProvisionError(Exception):
    """The provisioning file or a file it names is unusable; the message is for the technician."""


@dataclass(frozen=True, slots=True)
class Provision:
    """A checked provisioning file: its values and the boot-partition files it names."""

    values: dict[str, str | int]
    files: dict[str, Path]


def find_boot_dir(root: Path) -> Path | None:
    for rel in BOOT_DIRS:
        candidate = root / rel
        if (candidate / PROVISION_FILE).is_file():
            return candidate
    return None


def read_provision(boot_dir: Path) -> Provision:
    path = boot_dir / PROVISION_FILE
    raw = _read_limited(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{path.name}: not valid TOML: {exc}") from exc

    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ProvisionError(
            f"{path.name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}"
        )
    values: dict[str, str | int] = {}
    files: dict[str, Path] = {}
    for key, (kind, required, is_file) in KEYS.items():
        if key not in data:
            if required:
                raise ProvisionError(f"{path.name}: missing required key '{key}'")
            continue
        value = data[key]
        # bool is an int subclass in Python; TOML true must not pass as a pin number.
        if (
            not isinstance(value, (str, int))
            or not isinstance(value, kind)
            or isinstance(value, bool)
        ):
            raise ProvisionError(
                f"{path.name}: key '{key}' must be a {kind.__name__}, got {type(value).__name__}"
            )
        values[key] = value
        if is_file:
            files[key] = _boot_file(boot_dir, key, str(value))
    _check_values(path.name, values)
    for key in PEM_FILES:
        if b"-----BEGIN " not in _read_limited(files[key]):
            raise ProvisionError(f"{files[key].name} (key '{key}'): not a PEM file")
    return Provision(values=values, files=files)


def _check_values(name: str, values: dict[str, str | int]) -> None:
    if not DEVICE_ID_RE.fullmatch(str(values["device_id"])):
        raise ProvisionError(
            f"{name}: device_id must be 1-64 letters, digits, '-' or '_', "
            f"got {values['device_id']!r}"
        )
    if not BROKER_RE.fullmatch(str(values["broker"])):
        raise ProvisionError(
            f"{name}: broker must look like mqtts://host:8883, got {values['broker']!r}"
        )
    for key in ("gnss_port", "obd_port"):
        if key in values and not PORT_RE.fullmatch(str(values[key])):
            raise ProvisionError(f"{name}: {key} must be a /dev path, got {values[key]!r}")
    pin = values.get("ignition_pin")
    if isinstance(pin, int) and not 0 <= pin <= 63:
        raise ProvisionError(f"{name}: ignition_pin must be a GPIO number 0-63, got {pin}")


def _boot_file(boot_dir: Path, key: str, name: str) -> Path:
    # Names are relative to the provisioning directory; refusing paths keeps a crafted card from
    # making root read (and then wipe) files elsewhere on the system.
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ProvisionError(
            f"{PROVISION_FILE}: key '{key}' must name a file beside it, got {name!r}"
        )
    path = boot_dir / name
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


def provision_command(agent_bin: str, config_dir: Path, prov: Provision) -> list[str]:
    values, files = prov.values, prov.files
    command = [
        agent_bin, "provision",
        "--device-id", str(values["device_id"]),
        "--broker", str(values["broker"]),
        "--ca", str(files["ca"]),
        "--cert", str(files["cert"]),
        "--key", str(files["key"]),
        "--config-dir", str(config_dir),
        # A file on the boot partition is the technician's explicit request to (re)provision.
        "--force",
    ]  # fmt: skip
    if "username" in values:
        command += ["--username", str(values["username"])]
    if "password_file" in files:
        command += ["--password-file", str(files["password_file"])]
    for key, flag in (
        ("gnss_port", "--gnss-port"),
        ("obd_port", "--obd-port"),
        ("ignition_pin", "--ignition-pin"),
    ):
        if key in values:
            command += [flag, str(values[key])]
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


def secure_config(root: Path, config_dir: Path) -> None:
    """Give the service user read access to what provision wrote, and nobody else."""
    owner = _lookup_ids(root, SERVICE_USER)
    if owner is None:
        logger.warning(
            "user %s not found under %s; leaving ownership as written", SERVICE_USER, root
        )
        return
    _, gid = owner
    for path in [config_dir, *sorted(config_dir.rglob("*"))]:
        if path.is_symlink():
            continue
        os.chown(path, 0, gid)
        if path.is_dir():
            path.chmod(0o750)
        else:
            # Group-readable so the agent (group telematics) reads its key; never world-readable.
            path.chmod(0o640)


def _lookup_ids(root: Path, user: str) -> tuple[int, int] | None:
    if root == Path("/"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid
    # Another root has its own /etc/passwd; the host's user database does not apply to it.
    try:
        lines = (root / "etc/passwd").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return int(fields[2]), int(fields[3])
    return None


def remove_originals(boot_dir: Path, prov: Provision) -> None:
    """Overwrite, then unlink: a FAT card passed around a depot must not keep the key readable.

    Wear levelling on SD cards means the overwrite is best effort; the unlink is what counts.
    """
    for path in [*prov.files.values(), boot_dir / PROVISION_FILE, boot_dir / ERROR_FILE]:
        if not path.exists():
            continue
        try:
            size = path.stat().st_size
            with path.open("r+b") as handle:
                handle.write(b"\0" * size)
                handle.flush()
                os.fsync(handle.fileno())
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
        config_dir = root / CONFIG_DIR
        run_provision(provision_command(agent_bin, config_dir, prov))
        try:
            secure_config(root, config_dir)
        except OSError as exc:
            raise ProvisionError(f"cannot set ownership in {config_dir}: {exc}") from exc
    except ProvisionError as exc:
        logger.error("provisioning failed: %s", exc)
        try:
            write_error(boot_dir, str(exc))
        except OSError as write_exc:
            logger.error("cannot write %s: %s", boot_dir / ERROR_FILE, write_exc.strerror)
        return 1
    remove_originals(boot_dir, prov)
    write_done(boot_dir, str(prov.values["device_id"]))
    logger.info("provisioned device %s; starting the agent", prov.values["device_id"])
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
