"""Provisioning: validate a device's identity, broker and certificates, then install them safely.

``telematics-agent provision`` checks everything before it touches the disk: the device id, the
broker URL, that the client certificate matches its key, is inside its validity window, carries
no usage that forbids client authentication, and chains to the given CA; that the serial ports
exist. Only then does it write ``<config-dir>/agent.toml`` and copy the secrets into
``<config-dir>/tls/`` (``ca.pem``, ``client.pem`` 0644; ``client.key``, ``password`` 0600, owned by
the service user). Every file is written to a temporary file beside it, fsynced, and renamed into
place; the new ``agent.toml`` is read back with :func:`agent.config.load` before its rename. Any
error leaves the previous configuration byte-identical and exits 2 with one line saying what and
how to fix it.

Running it again with the same inputs changes nothing and says "unchanged". A configuration for a
different device id is only replaced with ``--force``. Keys of an existing ``agent.toml`` that
provisioning does not set (tuning such as ``spool.max_bytes``) are kept.

Missing serial ports are an error by default (a technician provisions with the van wired up and
a typo in a port name is the likeliest mistake); ``--allow-missing-ports`` accepts them, for
first-boot provisioning where USB adapters may enumerate after the oneshot unit runs.

A provisioning file (``--from-file provision.toml``, used by first-boot provisioning from the SD
card's boot partition) holds the same settings as the options, with underscores; relative paths
are relative to the file; options given on the command line win::

    device_id = "van-0042"
    broker = "mqtts://mqtt.fleet.example:8883"
    ca = "ca.pem"
    cert = "van-0042.pem"
    key = "van-0042.key"
    # username = "van-0042"            password_file = "password"
    # gnss_port = "/dev/gnss0"         obd_port = "/dev/obd0"
    # ignition_backend = "gpiod"       ignition_pin = 17
    # allow_missing_ports = true       insecure_plain = false
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import os
import pwd
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent import config as agent_config
from agent.errors import AgentError, ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_DIR = "/etc/telematics-agent"
DEFAULT_OWNER = "telematics"
CONFIG_NAME = "agent.toml"
TLS_DIR_NAME = "tls"
EXIT_ERROR = 2

_DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_-]{1,63})*\.?")
_BACKENDS = ("none", "rpigpio", "gpiod", "simulated")
MAX_INPUT_BYTES = 1024 * 1024  # certificates, keys, password and provisioning files are tiny
_FILE_KEYS: dict[str, type] = {
    "device_id": str,
    "broker": str,
    "ca": str,
    "cert": str,
    "key": str,
    "username": str,
    "password_file": str,
    "gnss_port": str,
    "obd_port": str,
    "ignition_pin": int,
    "ignition_backend": str,
    "ignition_line_file": str,
    "state_dir": str,
    "allow_missing_ports": bool,
    "insecure_plain": bool,
}
_PATH_KEYS = ("ca", "cert", "key", "password_file", "ignition_line_file")


class ProvisionError(AgentError, ValueError):
    """An input is wrong or the configuration cannot be written; nothing was changed."""


@dataclass(frozen=True, slots=True)
class BrokerURL:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """Everything the technician (or the provisioning file) said, not yet checked."""

    device_id: str
    broker: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str = ""
    password_file: Path | None = None
    gnss_port: str | None = None
    obd_port: str | None = None
    ignition_pin: int | None = None
    ignition_backend: str | None = None
    ignition_line_file: str | None = None
    state_dir: str | None = None
    config_dir: Path = Path(DEFAULT_CONFIG_DIR)
    owner: str = DEFAULT_OWNER
    force: bool = False
    allow_missing_ports: bool = False
    insecure_plain: bool = False


@dataclass(frozen=True, slots=True)
class PlannedFile:
    path: Path
    content: bytes
    mode: int
    owner: tuple[int, int] | None  # (uid, gid) to chown to; None = leave as created


@dataclass(frozen=True, slots=True)
class PlannedDir:
    path: Path
    mode: int
    owner: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What provisioning will write, computed and validated before anything is touched."""

    dirs: tuple[PlannedDir, ...]
    files: tuple[PlannedFile, ...]
    stale: tuple[Path, ...]  # secrets of a previous provisioning that no longer apply
    notes: tuple[str, ...]
    config: agent_config.Config


# --- validation -------------------------------------------------------------------------------


def parse_broker_url(url: str, *, insecure_plain: bool = False) -> BrokerURL:
    """``mqtts://host[:8883]`` or ``mqtt://host[:1883]``; plain only to loopback or on request."""
    forms = "expected mqtts://host[:8883] or mqtt://host[:1883]"
    try:
        parts = urlsplit(url.strip())
        port_given = parts.port
    except ValueError as exc:
        raise ProvisionError(f"--broker {url!r}: {exc}; {forms}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ProvisionError(f"--broker {url!r}: unknown scheme {parts.scheme!r}; {forms}")
    if parts.username or parts.password:
        raise ProvisionError(
            f"--broker {url!r}: credentials do not belong in the URL; "
            "use --username and --password-file"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProvisionError(f"--broker {url!r}: unexpected path or query; {forms}")
    host = parts.hostname or ""
    if not host:
        raise ProvisionError(f"--broker {url!r}: no host; {forms}")
    if not _HOST_NAME.fullmatch(host) and not _is_ip(host):
        raise ProvisionError(f"--broker {url!r}: {host!r} is not a valid host name or address")
    tls = parts.scheme == "mqtts"
    port = port_given or (8883 if tls else 1883)
    if not tls and not insecure_plain and not _is_loopback(host):
        # Plain MQTT over a cellular link exposes the device's credentials and the fleet's
        # positions to anyone on the path; loopback is the only place it is harmless.
        raise ProvisionError(
            f"--broker {url!r}: plain MQTT to a remote host sends credentials and positions "
            "unencrypted; use mqtts:// (or --insecure-plain for a lab broker)"
        )
    return BrokerURL(host=host, port=port, tls=tls)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_input(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise ProvisionError(
                f"{what} {path}: larger than {MAX_INPUT_BYTES // 1024} KiB; not the right file"
            )
        return data
    except FileNotFoundError:
        raise ProvisionError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise ProvisionError(f"{what} {path}: is a directory, expected a file") from None
    except PermissionError:
        raise ProvisionError(f"{what} {path}: cannot read it (permission denied)") from None
    except OSError as exc:
        raise ProvisionError(f"{what} {path}: cannot read it ({exc.strerror})") from None


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What validation learned about the client certificate, for the report."""

    subject: str
    issuer: str
    not_after: dt.datetime


def validate_tls(
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes | None,
    *,
    ca_path: Path,
    cert_path: Path,
    key_path: Path | None,
    now: dt.datetime | None = None,
) -> CertificateFacts:
    """Check that the certificate matches the key, is valid now and chains to the CA bundle."""
    # Imported here: cryptography is needed only by provision and check, not by the daemon.
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = now or dt.datetime.now(dt.UTC)
    clock_note = f"this device's clock says {now:%Y-%m-%d %H:%M} UTC"

    def load_certs(data: bytes, what: str, path: Path) -> list[x509.Certificate]:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            certs = []
        if not certs:
            raise ProvisionError(
                f"{what} {path}: not a PEM certificate "
                "(expected a '-----BEGIN CERTIFICATE-----' block)"
            )
        return certs

    ca_certs = load_certs(ca_pem, "--ca", ca_path)
    chain = load_certs(cert_pem, "--cert", cert_path)
    leaf = chain[0]

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key_pem is not None and key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except TypeError:
            raise ProvisionError(
                f"--key {key_path}: the key is encrypted with a passphrase; the agent starts "
                "unattended and needs it unencrypted (openssl pkey -in KEY -out KEY.plain)"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ProvisionError(
                f"--key {key_path}: not a PEM private key (expected '-----BEGIN PRIVATE KEY-----')"
            ) from None
        if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
            raise ProvisionError(
                f"--key {key_path} does not belong to --cert {cert_path} "
                f"({leaf.subject.rfc4514_string()}): the key and certificate must be issued "
                "together; check that both files are for this device"
            )

    for what, path, cert in [("--cert", cert_path, leaf)] + [
        ("--ca", ca_path, c) for c in ca_certs
    ]:
        name = cert.subject.rfc4514_string()
        if now > cert.not_valid_after_utc:
            raise ProvisionError(
                f"{what} {path} ({name}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                f"({clock_note}); issue a new certificate"
            )
        if now < cert.not_valid_before_utc:
            raise ProvisionError(
                f"{what} {path} ({name}) is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC ({clock_note}); if the clock is "
                "wrong, set it (NTP or `date -s`) and provision again"
            )

    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise ProvisionError(
            f"--cert {cert_path}: the certificate's extended key usage does not allow client "
            "authentication (clientAuth); the broker will refuse it"
        )

    def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        return True

    # Walk leaf -> intermediates bundled after it in the certificate file -> a CA of the bundle.
    current, intermediates = leaf, chain[1:]
    for _ in range(len(intermediates) + 1):
        if any(issued_by(current, ca) for ca in ca_certs):
            break
        parent = next((c for c in intermediates if issued_by(current, c)), None)
        if parent is None:
            raise ProvisionError(
                f"--cert {cert_path} (issued by {current.issuer.rfc4514_string()}) was not "
                f"signed by the CA in --ca {ca_path} "
                f"({', '.join(c.subject.rfc4514_string() for c in ca_certs)}); "
                "use the CA bundle of the PKI that issued this device's certificate"
            )
        intermediates = [c for c in intermediates if c is not parent]
        current = parent
    else:
        raise ProvisionError(f"--cert {cert_path}: certificate chain does not reach --ca {ca_path}")

    return CertificateFacts(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
    )


def _check_port(port: str, what: str, allow_missing: bool, notes: list[str]) -> None:
    if "://" in port:
        notes.append(f"{what} {port}: a pyserial URL, not checked here (run `check`)")
        return
    p = Path(port)
    if not p.exists():
        msg = (
            f"{what} {port}: no such device; plug the adapter in (udev names it), "
            "fix the path, or pass --allow-missing-ports if it is plugged in later"
        )
        if not allow_missing:
            raise ProvisionError(msg)
        notes.append(f"warning: {what} {port} is not present now; plug it in before `check`")
        return
    if p.is_dir() or p.is_file():
        raise ProvisionError(f"{what} {port}: a {'directory' if p.is_dir() else 'regular file'}, "
                             "not a serial device")


def _owner_ids(owner: str, notes: list[str]) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        notes.append(f"not root: files stay owned by uid {os.geteuid()}, not by {owner!r}")
        return None
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        notes.append(
            f"user {owner!r} does not exist: files left owned by root "
            "(the package creates the user; provision again after installing it)"
        )
        return None
    return entry.pw_uid, entry.pw_gid


def _existing_config(path: Path, device_id: str, force: bool) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ProvisionError(
            f"{path}: cannot read the existing configuration ({exc.strerror})"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        if force:
            return {}
        raise ProvisionError(
            f"{path}: the existing configuration is not valid TOML ({exc}); "
            "--force replaces it"
        ) from None
    device = data.get("device")
    old_id = device.get("id") if isinstance(device, dict) else None
    if old_id and old_id != device_id and not force:
        raise ProvisionError(
            f"{path} belongs to device {old_id!r}, not {device_id!r}; pass --force to give "
            "this unit a new identity (its spool and sequence numbers stay)"
        )
    return data


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def plan(req: ProvisionRequest, *, now: dt.datetime | None = None) -> Plan:
    """Validate every input and compute the files to write; touches nothing on disk."""
    notes: list[str] = []
    if not _DEVICE_ID.fullmatch(req.device_id):
        raise ProvisionError(
            f"--device-id {req.device_id!r}: use 1-64 letters, digits, '-' or '_' (e.g. van-0042)"
        )
    broker = parse_broker_url(req.broker, insecure_plain=req.insecure_plain)
    if req.ignition_backend is not None and req.ignition_backend not in _BACKENDS:
        raise ProvisionError(
            f"--ignition-backend {req.ignition_backend!r}: expected one of {', '.join(_BACKENDS)}"
        )
    if req.password_file is not None and not req.username:
        raise ProvisionError("--password-file given without --username")

    config_dir = req.config_dir.absolute()
    tls_dir = config_dir / TLS_DIR_NAME
    config_path = config_dir / CONFIG_NAME
    owner = _owner_ids(req.owner, notes)
    # agent.toml: root-owned, readable by the service's group, so the service cannot rewrite it.
    config_owner = (0, owner[1]) if owner else None

    files: list[PlannedFile] = []
    tls_paths = {"ca_file": "", "cert_file": "", "key_file": ""}
    if broker.tls:
        if req.ca is None:
            raise ProvisionError("--ca is required for mqtts:// (the CA that signed the broker)")
        if (req.cert is None) != (req.key is None):
            raise ProvisionError("--cert and --key go together (a certificate and its key)")
        if req.cert is None and not req.username:
            raise ProvisionError(
                "no client identity: give --cert and --key (mutual TLS) or --username"
            )
        ca_pem = _read_input(req.ca, "--ca")
        files.append(PlannedFile(tls_dir / "ca.pem", ca_pem, 0o644, owner))
        tls_paths["ca_file"] = str(tls_dir / "ca.pem")
        if req.cert is not None and req.key is not None:
            cert_pem = _read_input(req.cert, "--cert")
            key_pem = _read_input(req.key, "--key")
            facts = validate_tls(
                ca_pem, cert_pem, key_pem, ca_path=req.ca, cert_path=req.cert, key_path=req.key,
                now=now,
            )
            notes.append(
                f"certificate {facts.subject}, issued by {facts.issuer}, "
                f"valid until {facts.not_after:%Y-%m-%d}"
            )
            if f"CN={req.device_id}" not in facts.subject.split(","):
                notes.append(f"note: certificate subject {facts.subject} does not name "
                             f"{req.device_id!r} (fine if the broker does not map CN to identity)")
            files.append(PlannedFile(tls_dir / "client.pem", cert_pem, 0o644, owner))
            files.append(PlannedFile(tls_dir / "client.key", key_pem, 0o600, owner))
            tls_paths["cert_file"] = str(tls_dir / "client.pem")
            tls_paths["key_file"] = str(tls_dir / "client.key")
        else:
            from cryptography import x509

            try:
                if not x509.load_pem_x509_certificates(ca_pem):
                    raise ValueError
            except ValueError:
                raise ProvisionError(f"--ca {req.ca}: not a PEM certificate") from None
    else:
        given = [n for n, v in (("--ca", req.ca), ("--cert", req.cert), ("--key", req.key)) if v]
        if given:
            raise ProvisionError(
                f"{', '.join(given)} given but the broker URL is plain mqtt://; use mqtts://"
            )
        notes.append(f"warning: plain MQTT to {broker} (no TLS)")

    password_path = tls_dir / "password"
    if req.password_file is not None:
        secret = _read_input(req.password_file, "--password-file")
        if not secret.strip():
            raise ProvisionError(f"--password-file {req.password_file}: the file is empty")
        files.append(PlannedFile(password_path, secret, 0o600, owner))

    data = _existing_config(config_path, req.device_id, req.force)
    _set(data, "device.id", req.device_id)
    _set(data, "mqtt.host", broker.host)
    _set(data, "mqtt.port", broker.port)
    _set(data, "mqtt.username", req.username)
    _set(data, "mqtt.password_file", str(password_path) if req.password_file else "")
    for key, value in tls_paths.items():
        _set(data, f"mqtt.tls.{key}", value)
    if req.gnss_port is not None:
        _set(data, "gnss.port", req.gnss_port)
        _set(data, "gnss.enabled", True)
    if req.obd_port is not None:
        _set(data, "obd.port", req.obd_port)
        _set(data, "obd.enabled", True)
    backend = req.ignition_backend
    if backend is None and req.ignition_pin is not None:
        # libgpiod works on every Pi model; RPi.GPIO does not on the Pi 5.
        backend = "gpiod"
    if backend is not None:
        _set(data, "ignition.backend", backend)
    if req.ignition_pin is not None:
        _set(data, "ignition.pin", req.ignition_pin)
    if req.ignition_line_file is not None:
        _set(data, "ignition.line_file", req.ignition_line_file)
    if req.state_dir is not None:
        _set(data, "agent.state_dir", str(Path(req.state_dir).absolute()))

    text = render_toml(data)
    try:
        cfg = agent_config.loads(text, source=str(config_path))
    except ConfigError as exc:
        raise ProvisionError(f"the resulting configuration is invalid: {exc}") from None
    if cfg.ignition.backend == "simulated" and not cfg.ignition.line_file:
        raise ProvisionError("--ignition-backend simulated needs --ignition-line-file")
    if cfg.gnss.enabled:
        _check_port(cfg.gnss.port, "GNSS port", req.allow_missing_ports, notes)
    if cfg.obd.enabled:
        _check_port(cfg.obd.port, "OBD port", req.allow_missing_ports, notes)
    files.append(PlannedFile(config_path, text.encode(), 0o640, config_owner))

    dirs = [
        PlannedDir(config_dir, 0o755, None),
        PlannedDir(tls_dir, 0o750, owner),
        PlannedDir(Path(cfg.agent.state_dir), 0o750, owner),
    ]
    managed = (
        ("password", str(password_path) if req.password_file else ""),
        ("client.pem", tls_paths["cert_file"]),
        ("client.key", tls_paths["key_file"]),
        ("ca.pem", tls_paths["ca_file"]),
    )
    stale = tuple(tls_dir / name for name, used in managed if not used)
    return Plan(dirs=tuple(dirs), files=tuple(files), stale=stale, notes=tuple(notes), config=cfg)


# --- TOML output ------------------------------------------------------------------------------


def render_toml(data: Mapping[str, Any]) -> str:
    """The configuration as TOML, sections in the order of :class:`agent.config.Config`."""
    order = [f.name for f in dataclasses.fields(agent_config.Config)]
    lines = [
        "# Written by `telematics-agent provision`. Keys not listed take their defaults",
        "# (docs/configuration.md). Provisioning again keeps keys it does not set.",
    ]
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    for key in sorted(scalars):
        lines.append(f"{_toml_key(key)} = {_toml_value(scalars[key])}")
    tables = sorted(
        (k for k in data if isinstance(data[k], Mapping)),
        key=lambda k: (order.index(k) if k in order else len(order), k),
    )
    for key in tables:
        _render_table(lines, [key], data[key])
    return "\n".join(lines) + "\n"


def _render_table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    lines.append("")
    lines.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
    subtables = []
    for key in table:
        value = table[key]
        if isinstance(value, Mapping):
            subtables.append(key)
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key in subtables:
        _render_table(lines, [*path, key], table[key])


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        # Only inside arrays (arrays of tables, e.g. geofences kept from a hand-edited file):
        # an inline table reads back as the same list of tables.
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    raise ProvisionError(f"cannot write a value of type {type(value).__name__} to TOML")


# --- writing ----------------------------------------------------------------------------------


def _unchanged(f: PlannedFile) -> bool:
    try:
        st = os.stat(f.path, follow_symlinks=False)
        if (st.st_mode & 0o7777) != f.mode:
            return False
        if f.owner is not None and (st.st_uid, st.st_gid) != f.owner:
            return False
        return f.path.read_bytes() == f.content
    except OSError:
        return False


def _os_problem(path: Path, exc: OSError) -> ProvisionError:
    why = "permission denied (run provision as root, e.g. with sudo)" if isinstance(
        exc, PermissionError
    ) else (exc.strerror or str(exc))
    return ProvisionError(f"cannot write {path}: {why}; the previous configuration is untouched")


def apply(p: Plan) -> list[str]:
    """Write the plan: stage every file, validate, then rename into place. Returns what it did."""
    actions: list[str] = []
    for d in p.dirs:
        try:
            if not d.path.is_dir():
                d.path.mkdir(parents=True, mode=d.mode)
                actions.append(f"created {d.path}/")
            if d.owner is not None:
                st = d.path.stat()
                if (st.st_uid, st.st_gid) != d.owner:
                    os.chown(d.path, *d.owner)
        except OSError as exc:
            raise _os_problem(d.path, exc) from None

    todo = [f for f in p.files if not _unchanged(f)]
    staged: list[tuple[Path, PlannedFile]] = []
    try:
        for f in todo:
            tmp = f.path.with_name(f".{f.path.name}.provision-{os.getpid()}")
            try:
                tmp.unlink(missing_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, f.mode)
            except OSError as exc:
                raise _os_problem(f.path, exc) from None
            staged.append((tmp, f))
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(f.content)
                    out.flush()
                    os.fchmod(out.fileno(), f.mode)  # the umask may have cut bits from open()
                    if f.owner is not None:
                        os.fchown(out.fileno(), *f.owner)
                    os.fsync(out.fileno())
            except OSError as exc:
                raise _os_problem(f.path, exc) from None
            if f.path.name == CONFIG_NAME:
                try:
                    agent_config.load(tmp)
                except ConfigError as exc:
                    raise ProvisionError(
                        f"written configuration does not load back: {exc}"
                    ) from None
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise

    # Secrets first and agent.toml last: the configuration never names a file not yet in place.
    # A rename within one directory fails only if the disk itself fails; say what happened.
    for i, (tmp, f) in enumerate(staged):
        try:
            os.replace(tmp, f.path)
        except OSError as exc:
            for leftover, _ in staged[i:]:
                leftover.unlink(missing_ok=True)
            done = ", ".join(str(g.path) for _, g in staged[:i]) or "nothing"
            raise ProvisionError(
                f"cannot rename into {f.path} ({exc.strerror}); already replaced: {done}; "
                "run provision again"
            ) from None
        actions.append(f"wrote {f.path} (mode {f.mode:04o}{_owner_text(f.owner)})")
    for path in p.stale:
        try:
            if path.exists():
                path.unlink()
                actions.append(f"removed {path} (no longer configured)")
        except OSError as exc:
            actions.append(f"could not remove the stale {path} ({exc.strerror}); delete it")
    for parent in {f.path.parent for f in todo}:
        try:
            _fsync_dir(parent)
        except OSError:
            logger.warning("cannot fsync directory %s", parent)
    return actions


def _owner_text(owner: tuple[int, int] | None) -> str:
    return f", owner {owner[0]}:{owner[1]}" if owner else ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- command line -----------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = subparsers.add_parser(
        "provision",
        help="install this device's identity, broker and certificates",
        description=(
            "Validate a device id, broker URL, CA, client certificate and key, and serial ports, "
            "then write agent.toml and the secrets atomically with safe modes. Exit 2 on any "
            "error, with the previous configuration untouched."
        ),
    )
    sp.add_argument("--device-id", help="device id, e.g. van-0042")
    sp.add_argument("--broker", help="mqtts://host[:8883] or mqtt://host[:1883]")
    sp.add_argument("--ca", help="CA certificate bundle (PEM) that signed the broker")
    sp.add_argument("--cert", help="client certificate (PEM)")
    sp.add_argument("--key", help="client private key (PEM, unencrypted)")
    sp.add_argument("--username", help="MQTT username")
    sp.add_argument("--password-file", help="file holding the MQTT password")
    sp.add_argument("--gnss-port", help="GNSS serial port (e.g. /dev/gnss0)")
    sp.add_argument("--obd-port", help="OBD adapter serial port (e.g. /dev/obd0)")
    sp.add_argument("--ignition-pin", type=int, help="BCM GPIO of the ignition sense")
    sp.add_argument("--ignition-backend", choices=_BACKENDS, help="ignition sense backend")
    sp.add_argument("--ignition-line-file", help="simulated backend: file with '0' or '1'")
    sp.add_argument("--config-dir", default=None, help=f"default {DEFAULT_CONFIG_DIR}")
    sp.add_argument("--state-dir", help="spool and state directory (agent.state_dir)")
    sp.add_argument("--owner", default=None, help=f"service user owning the secrets "
                    f"(default {DEFAULT_OWNER})")
    sp.add_argument("--force", action="store_true", help="replace a different device's identity")
    sp.add_argument("--from-file", help="provisioning file (TOML) with the same settings")
    sp.add_argument("--allow-missing-ports", action="store_true", default=None,
                    help="accept serial ports that are not present yet")
    sp.add_argument("--insecure-plain", action="store_true", default=None,
                    help="allow plain mqtt:// to a non-loopback broker (lab only)")
    sp.add_argument("--dry-run", action="store_true", help="validate and show, write nothing")
    sp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sp.set_defaults(func=run)


def read_provision_file(path: Path) -> dict[str, Any]:
    """The settings of a provisioning file, paths made absolute relative to the file."""
    raw = _read_input(path, "--from-file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProvisionError(f"--from-file {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"--from-file {path}: not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        want = _FILE_KEYS.get(key)
        if want is None:
            raise ProvisionError(
                f"--from-file {path}: unknown key {key!r} (known: {', '.join(sorted(_FILE_KEYS))})"
            )
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            word = {str: "a string", int: "an integer", bool: "true or false"}[want]
            raise ProvisionError(f"--from-file {path}: key {key!r}: expected {word}")
        if key in _PATH_KEYS:
            value = str(path.parent / str(value))
        out[key] = value
    return out


def request_from_args(args: argparse.Namespace) -> ProvisionRequest:
    settings: dict[str, Any] = {}
    if getattr(args, "from_file", None):
        settings.update(read_provision_file(Path(args.from_file)))
    for key in _FILE_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    for required, flag in (("device_id", "--device-id"), ("broker", "--broker")):
        if not settings.get(required):
            raise ProvisionError(f"{flag} is required (or give it in --from-file)")

    def path_or_none(key: str) -> Path | None:
        value = settings.get(key)
        return Path(value) if value else None

    return ProvisionRequest(
        device_id=settings["device_id"],
        broker=settings["broker"],
        ca=path_or_none("ca"),
        cert=path_or_none("cert"),
        key=path_or_none("key"),
        username=settings.get("username") or "",
        password_file=path_or_none("password_file"),
        gnss_port=settings.get("gnss_port"),
        obd_port=settings.get("obd_port"),
        ignition_pin=settings.get("ignition_pin"),
        ignition_backend=settings.get("ignition_backend"),
        ignition_line_file=settings.get("ignition_line_file"),
        state_dir=settings.get("state_dir"),
        config_dir=Path(getattr(args, "config_dir", None) or DEFAULT_CONFIG_DIR),
        owner=getattr(args, "owner", None) or DEFAULT_OWNER,
        force=bool(getattr(args, "force", False)),
        allow_missing_ports=bool(settings.get("allow_missing_ports", False)),
        insecure_plain=bool(settings.get("insecure_plain", False)),
    )


def run(args: argparse.Namespace) -> int:
    as_json = bool(getattr(args, "json", False))
    try:
        req = request_from_args(args)
        p = plan(req)
        actions = [] if getattr(args, "dry_run", False) else apply(p)
    except ProvisionError as exc:
        if as_json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        else:
            print(f"provision: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    config_path = req.config_dir.absolute() / CONFIG_NAME
    changed = bool(actions)
    if as_json:
        print(json.dumps({
            "ok": True, "device_id": req.device_id, "config": str(config_path),
            "changed": changed, "actions": actions, "notes": list(p.notes),
        }))
        return 0
    for note in p.notes:
        print(f"provision: {note}")
    if getattr(args, "dry_run", False):
        for f in p.files:
            print(f"provision: would write {f.path} (mode {f.mode:04o})")
        print("provision: dry run: inputs are valid; nothing written")
        return 0
    for action in actions:
        print(f"provision: {action}")
    state = "configured" if changed else "unchanged"
    print(f"provision: {state}: device {req.device_id} -> {p.config.mqtt.host}:"
          f"{p.config.mqtt.port}; next: telematics-agent check --config {config_path}")
    return 0
