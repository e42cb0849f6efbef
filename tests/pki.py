"""PKI: a throwaway certificate authority that issues broker and client certificates for tests.

EC P-256 keys: generating one takes about a millisecond, so every test can have its own CA.

    ca = make_ca(tmp_path, "Fleet CA")
    server = make_cert(ca, tmp_path, "broker", server=True)
    client = make_cert(ca, tmp_path, "van-0042")
    expired = make_cert(ca, tmp_path, "van-old", expired=True)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key on disk (PEM)."""

    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class CA:
    """A self-signed certificate authority; ``cert_path`` is what a client's ``ca_file`` names."""

    name: str
    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_key(directory: Path, name: str) -> Path:
    """A fresh private key alone, e.g. to pair a certificate with the wrong key."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = Path(directory) / f"{name}.key"
    _write_key(path, key)
    return path


def make_ca(directory: Path, name: str = "Test CA", *, valid_days: int = 3650) -> CA:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    stem = _stem(name)
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return CA(name=name, cert_path=cert_path, key_path=key_path, cert=cert, key=key)


def make_cert(
    ca: CA,
    directory: Path,
    cn: str,
    *,
    expired: bool = False,
    not_yet_valid: bool = False,
    server: bool = False,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
) -> Issued:
    """A certificate for ``cn`` signed by ``ca``: a client certificate, or a server one with SANs.

    ``expired`` ends validity yesterday; ``not_yet_valid`` starts it tomorrow.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    if expired:
        start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    elif not_yet_valid:
        start, end = now + dt.timedelta(days=1), now + dt.timedelta(days=365)
    else:
        start, end = now - dt.timedelta(days=1), now + dt.timedelta(days=365)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if server:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    stem = _stem(cn)
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return Issued(cert_path=cert_path, key_path=key_path, cert=cert, key=key)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def mosquitto_tls_conf(
    port: int, ca: CA, server: Issued, *, require_client_cert: bool = True, host: str = "127.0.0.1"
) -> str:
    """Listener lines for ``simulator.broker.Mosquitto(extra_conf=...)``: TLS, optionally mutual.

    (``Mosquitto`` itself keeps a root-started broker root, so it can read the certificates in
    pytest's 0700 temporary directories.)
    """
    lines = [
        f"listener {port} {host}",
        f"cafile {ca.cert_path}",
        f"certfile {server.cert_path}",
        f"keyfile {server.key_path}",
    ]
    if require_client_cert:
        lines += ["require_certificate true", "use_identity_as_username true"]
    else:
        lines += ["allow_anonymous true"]
    return "\n".join(lines) + "\n"
