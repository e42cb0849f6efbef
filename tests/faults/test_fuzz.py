"""Fuzzing: hostile input to every parser an outsider can reach; only documented errors escape.

The unit suites already feed arbitrary bytes/text to each parser (tests/unit/test_nmea_*.py,
test_elm327_parser.py, test_config.py, test_commands.py). These properties go further: inputs
shaped like the real thing (checksummed sentences with hostile fields, mode 01/03/09 frames,
configurations with every real key holding any kind of value, command requests with real names
and ids), more examples, and the whole path rather than one function. Derandomized so CI sees
the same examples every run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import operator
import string
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config
from agent.clock import VirtualClock
from agent.commands import NAMES, CommandProcessor
from agent.encoder import Encoder, Identity, Message
from agent.errors import ConfigError
from agent.overrides import Overrides, allowed
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase
from drivers.elm327 import (
    AdapterReplyError,
    decode_dtcs,
    decode_mode01,
    decode_vin,
    parse_reply,
    parse_voltage,
)
from drivers.nmea import NMEADecoder
from drivers.samples import GNSSFix

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=1500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REPO = Path(__file__).resolve().parents[2]

# -- NMEA ------------------------------------------------------------------------------------

SENTENCE_TYPES = ["RMC", "GGA", "GSA", "VTG", "GSV", "ZDA", "GLL", "GNS", "TXT", "XYZ"]
TALKERS = ["GP", "GN", "GL", "GA", "BD", "P", ""]
hostile_field = st.one_of(
    st.sampled_from(["", "A", "V", "N", "S", "E", "W", "1", "0", "-0", "nan", "inf", "1e308",
                     "999999.99", "4916.45", "12311.12", "123519", "235959.999", "230394",
                     "311299", "000000", "99", "-1", "M", "K", "T", "9" * 40]),
    st.text(alphabet=string.digits + ".-+eE", max_size=14),
    st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("$", "")
            .replace("*", ""), max_size=12),
)


def _checksummed(body: str) -> bytes:
    raw = body.encode("latin-1", "replace")
    checksum = functools.reduce(operator.xor, raw, 0)
    return b"$" + raw + b"*" + f"{checksum:02X}".encode() + b"\r\n"


sentence = st.builds(
    lambda talker, kind, fields: _checksummed(",".join([talker + kind, *fields])),
    st.sampled_from(TALKERS),
    st.sampled_from(SENTENCE_TYPES),
    st.lists(hostile_field, max_size=22),
)
# Real sentences with a few fields swapped for hostile ones: these still decode to fixes
# often, so the plausibility checks below see many fixes, not only rejections.
TEMPLATES = [
    "GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,201126,003.1,W,A",
    "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
    "GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
    "GPZDA,123519.00,20,11,2026,00,00",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    fields = draw(st.sampled_from(TEMPLATES)).split(",")
    for _ in range(draw(st.integers(0, 3))):
        fields[draw(st.integers(1, len(fields) - 1))] = draw(hostile_field)
    return _checksummed(",".join(fields))


junk = st.binary(max_size=40).filter(lambda b: b"$" not in b)


@FUZZ
@given(st.lists(st.one_of(mutated(), mutated(), sentence, junk), max_size=30), st.data())
def test_nmea_stream_of_hostile_checksummed_sentences(parts: list[bytes], data: Any) -> None:
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = NMEADecoder()
    epochs = []
    t = 0.0
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        t += 0.1
        epochs += decoder.feed(stream[a:b], t)
    epochs += decoder.flush()
    for epoch in epochs:
        fix = getattr(epoch, "fix", None)
        if isinstance(fix, GNSSFix):
            # Whatever got through is a plausible fix, never NaN or off the globe.
            assert -90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0, fix
            assert not any(math.isnan(v) for v in (fix.lat, fix.lon))
            assert fix.utc.tzinfo is not None and fix.utc.year >= 1980, fix
            for v in (fix.speed_mps, fix.hdop, fix.alt_m, fix.course_deg):
                assert v is None or math.isfinite(v), fix


# -- ELM327 ----------------------------------------------------------------------------------

hex_bytes = st.binary(min_size=0, max_size=24)
frame_text = st.builds(
    lambda header, data, spaced: (header + " " if header else "")
    + (" " if spaced else "").join(f"{b:02X}" for b in data),
    st.sampled_from(["", "7E8", "7E9", "7E8 10", "7E8 21", "18DAF110"]),
    hex_bytes,
    st.booleans(),
)
reply_text = st.lists(
    st.one_of(frame_text, st.sampled_from(["NO DATA", "SEARCHING...", "?", ">", "014", "0:",
                                           "1:4902", "STOPPED", "ERR94", "BUS INIT: ...ERROR",
                                           "12.6V", "\x00", ""])),
    max_size=6,
).map("\r".join)


@FUZZ
@given(reply_text, st.sampled_from(["", "010C", "010D0C", "03", "07", "0902", "ATRV"]))
def test_elm327_reply_through_every_decoder(text: str, request: str) -> None:
    with contextlib.suppress(AdapterReplyError):
        parse_voltage(text)
    try:
        messages = parse_reply(text, request)
    except AdapterReplyError:
        return
    for m in messages:
        for decode in (decode_mode01, lambda d: decode_dtcs(d, 3), lambda d: decode_dtcs(d, 7),
                       decode_vin):
            with contextlib.suppress(AdapterReplyError):
                decode(m.data)


@FUZZ
@given(st.binary(max_size=64))
def test_elm327_decoders_take_any_bytes(data: bytes) -> None:
    for decode in (decode_mode01, lambda d: decode_dtcs(d, 3), lambda d: decode_dtcs(d, 7),
                   decode_vin):
        with contextlib.suppress(AdapterReplyError):
            decode(data)


# -- configuration ---------------------------------------------------------------------------

KEYS = [name for name, _, _ in config.describe()]
any_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
        st.text(max_size=20), st.sampled_from(["", "auto", "json", "debug", "/dev/null", "-1"]),
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8,
)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
    return out


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), any_value, max_size=8))
def test_config_with_real_keys_and_any_values(flat: dict[str, Any]) -> None:
    try:
        cfg = config.from_dict(_nest(flat), source="fuzz.toml")
    except ConfigError as exc:
        assert "fuzz.toml" in str(exc), exc  # every error names the file
        return
    cfg.digest()  # a configuration that loads can be hashed and described
    config.to_dict(cfg)


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=12), any_value, max_size=4))
def test_config_changes_by_dotted_key(changes: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        config.replace_keys(config.Config(), changes)


# Configuration files as text: what a technician's editor (or a corrupted SD card) can leave
# in agent.toml, through tomllib and the loader. Only ConfigError may come out.

TOML_TOKENS = [
    "\n", "\r\n", " ", "\t", "[", "]", "[[", "]]", "=", " = ", ",", ".", "{", "}", "#", '"', "'",
    '"""', "'''", "\\", "\\u00", "\\U0001F600", "\x00", "\x7f", "\ufeff", "\udcff",
    "device", "id", '"van-1"', "mqtt", "port", "tls", "spool", "detect.harsh",
]
TOML_VALUES = [
    '"van-1"', "'literal'", '"""multi\nline"""', '"\\u00e9"', '"unterminated', '"\\x"', "[]",
    "[1, 2.5]", "[-3.0, -4.0, -5.0]", "{}", "{a = 1}", "true", "false", "inf", "-inf", "nan",
    "+nan", "-0", "0x", "0xff", "0o7", "0b1", "1e400", "-1e400", "1_000", "1__0", "0.", ".5",
    "07", "1979-05-27T07:32:00Z", "1979-05-27", "1979-13-45", "07:32:00", "24:00:00",
    "9223372036854775807", "9223372036854775808", "-9223372036854775809",
    "1" + "0" * 4400, "0x" + "f" * 5000, "[" * 1100, "{a=" * 600,
]
TOML_HEADERS = ["[device]", "[mqtt]", "[mqtt.tls]", "[[mqtt]]", "[detect.harsh]", "[gnss]", "[",
                "[device.id]", '["device"]', "[ spool ]", "[agent]"]
LEAF_NAMES = sorted({key.rsplit(".", 1)[-1] for key in KEYS})
toml_line = st.one_of(
    st.builds(
        "{} = {}".format,
        st.sampled_from(LEAF_NAMES) | st.sampled_from(["a", '"q"', "a.b", "", "mqtt.port"]),
        st.sampled_from(TOML_VALUES) | st.text(max_size=6),
    ),
    st.sampled_from(TOML_HEADERS),
    st.lists(st.sampled_from(TOML_TOKENS) | st.text(max_size=4), max_size=8).map("".join),
)
toml_ish = st.lists(toml_line, max_size=12).map("\n".join)


@FUZZ
@given(toml_ish)
def test_config_text_that_is_almost_toml(text: str) -> None:
    _load_text_or_config_error(text)


def _toml_key(key: str) -> str:
    if key and all(c in string.ascii_letters + string.digits + "_-" for c in key):
        return key
    return _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, but TOML forbids surrogate-pair escapes (hence the raw
    # characters, ensure_ascii=False) and a raw DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Hexadecimal escapes int()'s 4300-digit limit, so huge integers reach the loader.
        return hex(value) if value > 10**30 else str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml_document(doc: dict[str, Any], path: tuple[str, ...] = ()) -> str:
    """``doc`` as a TOML file: nested tables as [headers], inline tables only inside arrays."""
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    scalars = [(k, v) for k, v in doc.items() if k not in tables]
    text = "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in scalars)
    for key, table in tables.items():
        sub = (*path, key)
        text += "[" + ".".join(_toml_key(k) for k in sub) + "]\n"
        text += _toml_document(table, sub)
    return text


toml_scalar = st.one_of(
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 10**400, 16**1000]),
    st.floats(),
    st.floats(-1e6, 1e6),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.sampled_from(["", "auto", "json", "debug", "/dev/null", "van-1", "5", "3.1.1"]),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
toml_value = st.recursive(
    toml_scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


# Mostly real keys with scalar values, so most documents get past the unknown-key and type
# checks (the first error wins) and reach the range checks and conversions behind them.
real_keys = st.dictionaries(
    st.sampled_from(KEYS), toml_scalar | toml_scalar | toml_value, max_size=6
)
stray_keys: st.SearchStrategy[dict[str, Any]] = st.just({}) | st.dictionaries(
    st.text(max_size=12), toml_value, max_size=2
)


@FUZZ
@given(real_keys, stray_keys, st.booleans())
def test_config_valid_toml_documents_with_real_keys(
    real: dict[str, Any], stray: dict[str, Any], with_id: bool
) -> None:
    doc = _nest({**stray, **real})
    device = doc.setdefault("device", {})
    if with_id and isinstance(device, dict):
        device.setdefault("id", "van-1")
    text = _toml_document(doc)
    tomllib.loads(text)  # the strategy writes valid TOML: this tests the loader, not tomllib
    _load_text_or_config_error(text)


def _load_text_or_config_error(text: str) -> None:
    try:
        cfg = config.loads(text, source="fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: "), message
        assert "\n" not in message, message
        return
    cfg.digest()  # a configuration that loads can be hashed


# -- command payloads ------------------------------------------------------------------------


class _Host:
    """A small behaving command host: what the daemon answers, without devices or threads."""

    def __init__(self) -> None:
        self.config = config.Config()

    def apply_config(self, cfg: config.Config) -> None:
        self.config = cfg

    def health_problem(self) -> str:
        return ""

    def describe(self) -> dict[str, Any]:
        return {"version": "fuzz", "uptime_s": 1.0, "config_hash": self.config.digest(),
                "mqtt_connected": True, "spool_depth": 0}

    def locate(self) -> dict[str, Any] | None:
        return None

    def flush(self) -> dict[str, Any]:
        return {"committed_batches": 0, "spool_depth": 0}

    def read_dtc(self) -> dict[str, Any]:
        return {"stored": [], "pending": [], "read_age_s": 0.0}


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12,
)
# Ids and changes that pass the schemas most of the time, so requests reach the commands
# themselves (and the configuration rules) rather than stopping at validation.
request_id = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
change_value = st.one_of(
    json_value,
    st.sampled_from([0, -1, 0.5, 2**63, 10**400, 1e308, 5e-324, True, "x" * 600]),
    st.lists(st.floats(allow_nan=False) | st.integers(), max_size=6),
)
request_doc = st.fixed_dictionaries(
    {},
    optional={
        "id": request_id | request_id | st.text(max_size=70) | st.integers() | st.none(),
        "changes": st.dictionaries(
            st.sampled_from([k for k in KEYS if allowed(k)])
            | st.sampled_from(KEYS)
            | st.text(max_size=12),
            change_value,
            max_size=3,
        ),
    },
).flatmap(lambda doc: st.just(doc) | st.builds(lambda extra: {**doc, "extra": extra}, json_value))
payload_bytes = st.one_of(
    request_doc.map(lambda d: json.dumps(d).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"NaN", b'{"id": NaN}', b'{"a": Infinity}', b"[" * 5000,
                     b"\xff\xfe{}", b'{"id": "x"}' + b" " * 5000]),
)
any_request = st.tuples(st.sampled_from([*NAMES, "reboot", "x" * 65, "", "ping/../x"]),
                        payload_bytes)
# Requests the schemas accept, half of them set_config with allowed keys: the ones that run
# the command itself and the configuration rules behind it.
well_formed_request = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.builds(lambda i: {"id": i}, request_id)),
    st.tuples(
        st.just("set_config"),
        st.builds(
            lambda i, changes: {"id": i, "changes": changes},
            request_id,
            st.dictionaries(st.sampled_from([k for k in KEYS if allowed(k)]), change_value,
                            min_size=1, max_size=3),
        ),
    ),
).map(lambda r: (r[0], json.dumps(r[1]).encode()))


def test_command_payloads_get_one_schema_valid_answer_or_none(tmp_path: Path) -> None:
    answers: list[Message] = []
    seq = SequenceCounter(tmp_path / "seq")
    encoder = Encoder(Identity("van-fuzz", "boot", "fleet/v1"), seq,
                      TimeBase(VirtualClock(0.0, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))))
    processor = CommandProcessor(
        _Host(), encoder, answers.append, lambda job: job(), lambda: 0.0,
        Overrides(tmp_path), confirm_s=0.0, rate_per_s=1e9, burst=10**9,
    )
    schema = json.loads((REPO / "agent" / "schemas" / "cmd_result.json").read_text())

    @FUZZ
    @given(any_request | well_formed_request)
    def run(request: tuple[str, bytes]) -> None:
        name, payload = request
        before = len(answers)
        processor.on_command(name, payload)  # the publisher's entry point
        processor.tick()  # confirm (or roll back) a set_config at once
        new = answers[before:]
        assert len(new) <= 1, [m.payload for m in new]
        for m in new:
            jsonschema.validate(m.payload, schema)
            assert m.topic.endswith("/result"), m.topic
            # handle() turns any exception into an "internal error" answer, which is
            # schema-valid: without this, a crash behind a command would pass the fuzz.
            error = m.payload.get("error")
            assert not (isinstance(error, str) and error.startswith("internal error")), (
                name, payload, m.payload
            )

    run()
