"""Provision's pure parts: broker URLs, TOML output, certificate validation."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from agent.provision import (
    BrokerURL,
    ProvisionError,
    parse_broker_url,
    read_provision_file,
    render_toml,
    validate_tls,
)
from tests.pki import CA, make_ca, make_cert


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtts://mqtt.fleet.example", BrokerURL("mqtt.fleet.example", 8883, True)),
        ("mqtts://mqtt.fleet.example:8884", BrokerURL("mqtt.fleet.example", 8884, True)),
        ("mqtt://127.0.0.1", BrokerURL("127.0.0.1", 1883, False)),
        ("mqtt://localhost:1884/", BrokerURL("localhost", 1884, False)),
        ("mqtt://[::1]:1883", BrokerURL("::1", 1883, False)),
        ("MQTTS://Broker.Example", BrokerURL("broker.example", 8883, True)),
    ],
)
def test_broker_url_forms(url: str, expected: BrokerURL) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://broker.example", "unknown scheme"),
        ("broker.example:8883", "unknown scheme"),
        ("mqtts://user:pw@broker.example", "credentials do not belong in the URL"),
        ("mqtts://broker.example:99999", "expected mqtts://"),
        ("mqtts://broker.example/topic", "unexpected path"),
        ("mqtts://", "no host"),
        ("mqtt://10.0.0.5", "unencrypted"),
        ("mqtts://bro ker.example", "not a valid host name"),
        ("mqtts://broker..example", "not a valid host name"),
        ("mqtts://-broker.example", "not a valid host name"),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ProvisionError, match=message):
        parse_broker_url(url)


def test_plain_remote_broker_only_when_asked() -> None:
    assert parse_broker_url("mqtt://10.0.0.5", insecure_plain=True) == BrokerURL(
        "10.0.0.5", 1883, False
    )
    assert str(BrokerURL("::1", 1883, False)) == "mqtt://[::1]:1883"


_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
_keys = st.text(min_size=1, max_size=12)
_arrays = st.one_of(
    st.lists(_scalars, max_size=3),
    st.lists(st.dictionaries(_keys, _scalars, max_size=3), max_size=3),  # arrays of tables
)
_tables = st.dictionaries(
    _keys,
    st.one_of(_scalars, _arrays, st.dictionaries(_keys, _scalars, max_size=4)),
    max_size=5,
)


@given(st.dictionaries(_keys, _tables, max_size=4))
def test_rendered_toml_reads_back_identically(data: dict[str, dict[str, object]]) -> None:
    assert tomllib.loads(render_toml(data)) == data


def test_rendered_sections_follow_config_order() -> None:
    text = render_toml({"spool": {"max_bytes": 70000}, "device": {"id": "v"}, "agent": {}})
    assert text.index("[agent]") < text.index("[device]") < text.index("[spool]")


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path, "Fleet CA")


def _validate(ca: CA, cert: Path, key: Path | None, *, now: dt.datetime | None = None) -> str:
    facts = validate_tls(
        ca.cert_path.read_bytes(),
        cert.read_bytes(),
        key.read_bytes() if key else None,
        ca_path=ca.cert_path,
        cert_path=cert,
        key_path=key,
        now=now,
    )
    return facts.subject


def test_good_certificate_passes(ca: CA, tmp_path: Path) -> None:
    client = make_cert(ca, tmp_path, "van-0042")
    assert _validate(ca, client.cert_path, client.key_path) == "CN=van-0042"


def test_wrong_clock_is_named_in_the_error(ca: CA, tmp_path: Path) -> None:
    client = make_cert(ca, tmp_path, "van-0042")
    # A Pi without an RTC that booted with a clock from 1970: the error must say so.
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ProvisionError, match="clock says 1970-01-01"):
        _validate(ca, client.cert_path, client.key_path, now=epoch)


def test_server_only_certificate_is_refused(ca: CA, tmp_path: Path) -> None:
    server = make_cert(ca, tmp_path, "broker", server=True)
    with pytest.raises(ProvisionError, match="client authentication"):
        _validate(ca, server.cert_path, server.key_path)


def test_expired_ca_is_refused(tmp_path: Path) -> None:
    old = make_ca(tmp_path / "old", "Old CA", valid_days=-1)
    client = make_cert(old, tmp_path, "van-0042")
    with pytest.raises(ProvisionError, match=r"--ca .* expired on"):
        _validate(old, client.cert_path, client.key_path)


def test_encrypted_key_is_refused_with_a_fix(ca: CA, tmp_path: Path) -> None:
    client = make_cert(ca, tmp_path, "van-0042")
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        client.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    with pytest.raises(ProvisionError, match="encrypted with a passphrase"):
        _validate(ca, client.cert_path, locked)


def test_garbage_key_is_refused(ca: CA, tmp_path: Path) -> None:
    client = make_cert(ca, tmp_path, "van-0042")
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"\x00\xffnot a key")
    with pytest.raises(ProvisionError, match="not a PEM private key"):
        _validate(ca, client.cert_path, junk)


def test_chain_through_an_intermediate_bundled_with_the_certificate(
    ca: CA, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fleet Issuing CA")])
    inter = (
        x509.CertificateBuilder()
        .subject_name(inter_name)
        .issuer_name(ca.cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "van-0042")]))
        .issuer_name(inter_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = tmp_path / "chain.pem"
    key = tmp_path / "leaf.key"
    key.write_bytes(
        leaf_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    chain.write_bytes(leaf.public_bytes(pem))
    with pytest.raises(ProvisionError, match="was not signed by the CA"):
        _validate(ca, chain, key)
    chain.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    assert _validate(ca, chain, key) == "CN=van-0042"


def test_oversized_input_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "provision.toml"
    big.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ProvisionError, match="larger than 1024 KiB"):
        read_provision_file(big)


def test_provision_file_rejects_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    f = tmp_path / "provision.toml"
    f.write_text('device_id = "van-1"\nbrokr = "mqtts://x"\n')
    with pytest.raises(ProvisionError, match="unknown key 'brokr'"):
        read_provision_file(f)
    f.write_text('device_id = "van-1"\nignition_pin = "17"\n')
    with pytest.raises(ProvisionError, match="'ignition_pin': expected an integer"):
        read_provision_file(f)
    f.write_text("device_id = \n")
    with pytest.raises(ProvisionError, match="not valid TOML"):
        read_provision_file(f)
    f.write_text('device_id = "van-1"\nca = "certs/ca.pem"\n')
    assert read_provision_file(f)["ca"] == str(tmp_path / "certs" / "ca.pem")
