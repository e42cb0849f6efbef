"""Remote commands: the schema validator against jsonschema, request checks, set_config rollback."""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.clock import VirtualClock
from agent.commands import SCHEMA_DIR, CommandError, CommandProcessor, TokenBucket
from agent.config import Config, loads, replace_keys
from agent.encoder import Encoder, Identity, Message
from agent.overrides import Overrides, dump_toml
from agent.sequence import SequenceCounter
from agent.timebase import TimeBase
from agent.validator import SchemaError, ValidationError, Validator

SCHEMAS = sorted(SCHEMA_DIR.glob("cmd_*.json"))
SET = "cmd_set_config.json"
REQUESTS = [p for p in SCHEMAS if p.name != "cmd_result.json"]


def _real(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _agrees(path: Path, doc: Any) -> None:
    ours = Validator.from_file(path)
    try:
        ours.validate(doc)
        mine = True
    except ValidationError:
        mine = False
    theirs = _real(path).is_valid(doc)
    assert mine == theirs, f"{path.name}: ours={mine} jsonschema={theirs} for {doc!r}"


EXAMPLES: list[tuple[str, Any, bool]] = [
    ("cmd_ping.json", {"id": "r1"}, True),
    ("cmd_ping.json", {"id": "r1", "extra": 1}, False),
    ("cmd_ping.json", {}, False),
    ("cmd_ping.json", {"id": 5}, False),
    ("cmd_ping.json", {"id": ""}, False),
    ("cmd_ping.json", {"id": "x" * 65}, False),
    ("cmd_ping.json", {"id": "spaces are not ids"}, False),
    ("cmd_ping.json", [], False),
    ("cmd_ping.json", "r1", False),
    (SET, {"id": "s", "changes": {"report.moving_interval_s": 5}}, True),
    (SET, {"id": "s", "changes": {"report.moving_interval_s": 5.5}}, True),
    (SET, {"id": "s", "changes": {"detect.harsh.brake_bands_mps2": [-3, -4]}}, True),
    (SET, {"id": "s", "changes": {"detect.geofences_file": "/x.geojson"}}, True),
    (SET, {"id": "s", "changes": {}}, False),
    (SET, {"id": "s"}, False),
    (SET, {"id": "s", "changes": {"nodots": 1}}, False),
    (SET, {"id": "s", "changes": {"Report.X": 1}}, False),
    (SET, {"id": "s", "changes": {"report.x": None}}, False),
    (SET, {"id": "s", "changes": {"report.x": {"a": 1}}}, False),
    (SET, {"id": "s", "changes": {"report.x": ["a"]}}, False),
    (SET, {"id": "s", "changes": {"report.x": "y" * 513}}, False),
    (SET, {"id": "s", "changes": {f"report.k{i}": i for i in range(33)}}, False),
    (SET, {"id": "s", "changes": {"report.x": list(range(17))}}, False),
    (SET, {"id": "s", "changes": {"report.x": True}}, True),
]


@pytest.mark.parametrize(("name", "doc", "valid"), EXAMPLES)
def test_validator_agrees_with_jsonschema_on_examples(name: str, doc: Any, valid: bool) -> None:
    path = SCHEMA_DIR / name
    _agrees(path, doc)
    assert _real(path).is_valid(doc) is valid


def test_every_shipped_schema_is_valid_for_both_validators() -> None:
    assert len(REQUESTS) == 6
    for path in SCHEMAS:
        _real(path)
        Validator.from_file(path)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from(["id", "changes", "report.moving_interval_s", "x", "detect.a.b", ""])
_requests = st.dictionaries(
    _keys,
    _json
    | st.dictionaries(
        st.sampled_from(["report.a", "detect.b.c", "nodot", "A.b", "health.interval_s"]),
        _json,
        max_size=3,
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(doc=_requests | _json, which=st.sampled_from(SCHEMAS))
def test_validator_agrees_with_jsonschema_on_generated_documents(doc: Any, which: Path) -> None:
    _agrees(which, doc)


def test_validator_refuses_keywords_it_does_not_implement() -> None:
    with pytest.raises(SchemaError, match="oneOf"):
        Validator({"type": "object", "oneOf": [{"type": "string"}]})
    with pytest.raises(SchemaError, match="unknown type"):
        Validator({"type": "thing"})


def test_trailing_dollar_does_not_accept_a_final_newline() -> None:
    # Python's '$' matches before a trailing newline; JSON Schema's (ECMA-262) does not.
    with pytest.raises(ValidationError):
        Validator.from_file(SCHEMA_DIR / "cmd_ping.json").validate({"id": "r1\n"})


class Host:
    """A small behaving host: a real Config, applied and rolled back for real."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.applied: list[Config] = []
        self.problem = ""
        self.fix: dict[str, Any] | None = None

    @property
    def config(self) -> Config:
        return self.cfg

    def apply_config(self, cfg: Config) -> None:
        if cfg.detect.geofences_file == "/broken":
            raise ValueError("geofences file /broken not found")
        self.cfg = cfg
        self.applied.append(cfg)

    def health_problem(self) -> str:
        return self.problem

    def describe(self) -> dict[str, Any]:
        return {"uptime_s": 1.0}

    def locate(self) -> dict[str, Any] | None:
        return self.fix

    def flush(self) -> dict[str, Any]:
        if self.problem == "disk":
            raise OSError(28, "No space left on device")
        return {"committed_batches": 0}

    def read_dtc(self) -> dict[str, Any]:
        raise CommandError("OBD is disabled")


@pytest.fixture
def rig(tmp_path: Path) -> tuple[CommandProcessor, Host, list[Message]]:
    cfg = loads(f'[device]\nid = "van-9"\n[agent]\nstate_dir = "{tmp_path}"\n', source="t.toml")
    host = Host(cfg)
    clock = VirtualClock(100.0)
    seq = SequenceCounter(tmp_path / "seq")
    encoder = Encoder(Identity("van-9", "boot-1"), seq, TimeBase(clock))
    out: list[Message] = []

    def run_now(fn: Callable[[], None]) -> None:
        fn()

    proc = CommandProcessor(
        host, encoder, out.append, run_now, clock.monotonic, Overrides(tmp_path), confirm_s=0.05
    )
    return proc, host, out


def _last(out: list[Message]) -> dict[str, Any]:
    payload = dict(out[-1].payload)
    _real(SCHEMA_DIR / "cmd_result.json").validate(payload)
    return payload


def test_each_command_answers_on_its_result_topic(rig: Any) -> None:
    proc, host, out = rig
    proc.on_command("ping", b'{"id":"p1"}')
    assert out[-1].topic == "fleet/v1/van-9/cmd/ping/result"
    assert _last(out)["ok"] and _last(out)["id"] == "p1"
    proc.on_command("get_config", b'{"id":"g1"}')
    res = _last(out)
    assert res["result"]["config"]["device"]["id"] == "van-9"
    assert res["result"]["config_hash"] == host.cfg.digest()
    proc.on_command("locate", b'{"id":"l1"}')
    assert not _last(out)["ok"] and "no GNSS fix" in _last(out)["error"]
    host.fix = {"lat": 51.3, "lon": 12.4}
    proc.on_command("locate", b'{"id":"l2"}')
    assert _last(out)["result"] == {"lat": 51.3, "lon": 12.4}
    proc.on_command("read_dtc", b'{"id":"d1"}')
    assert _last(out)["error"] == "OBD is disabled"
    proc.on_command("flush", b'{"id":"f1"}')
    assert _last(out)["ok"]


def test_results_order_among_records_without_using_up_a_seq(rig: Any) -> None:
    proc, _, out = rig
    record_seq = proc.encoder.seq.take()  # a durable record made before the commands
    for n in range(3):
        proc.on_command("ping", f'{{"id": "p{n}"}}'.encode())
        assert _last(out)["seq"] == record_seq
    assert proc.encoder.seq.take() == record_seq + 1, "a result left a gap in the records' seq"


def _change(member: bytes) -> bytes:
    return b'{"id": "s", "changes": {' + member + b"}}"


@pytest.mark.parametrize(
    ("name", "payload", "error"),
    [
        ("ping", b'{"id": "x",', "malformed JSON"),
        ("ping", b"\xff\xfe", "not UTF-8"),
        ("ping", b"[1, 2]", "must be a JSON object"),
        ("ping", b'{"id": "x", "n": NaN}', "malformed JSON"),
        ("ping", b'{"id": 7}', "expected string"),
        ("ping", b'{"id": "x", "more": 1}', "unknown member 'more'"),
        ("reboot", b'{"id": "x"}', "unknown command 'reboot'"),
        ("ping", b'{"id": "' + b"a" * 5000 + b'"}', "payload too large"),
        ("ping", b"[" * 3000 + b"]" * 3000, "payload too large"),
        ("ping", b"[" * 2000 + b"]" * 2000, "malformed JSON"),
        ("set_config", _change(b'"report.moving_interval_s": "fast"'), "expected a number"),
        ("set_config", _change(b'"mqtt.host": "evil.example"'), "cannot be changed remotely"),
        ("set_config", _change(b'"report.nope": 1'), "unknown key"),
        ("set_config", _change(b'"report.moving_interval_s": -1'), "from 0.0 to 3600.0"),
    ],
)
def test_hostile_requests_get_a_clear_error_and_change_nothing(
    rig: Any, name: str, payload: bytes, error: str
) -> None:
    proc, host, out = rig
    before = host.cfg
    proc.on_command(name, payload)
    res = _last(out)
    assert res["ok"] is False
    assert error in res["error"]
    assert host.cfg is before and host.applied == []
    assert not proc.overrides.path.exists()


def test_set_config_applies_persists_and_confirms(rig: Any) -> None:
    proc, host, out = rig
    proc.on_command("set_config", b'{"id":"s1","changes":{"report.moving_interval_s":5}}')
    assert host.cfg.report.moving_interval_s == 5.0
    assert out == [], "answered once confirmed"
    assert not proc.overrides.path.exists(), "persisted only once confirmed"
    staged = tomllib.loads(proc.overrides.pending_path.read_text())
    assert staged == {"report.moving_interval_s": 5}
    proc.on_command("set_config", b'{"id":"s2","changes":{"report.moving_interval_s":6}}')
    assert "still being confirmed" in _last(out)["error"]
    time.sleep(0.06)
    proc.tick()
    res = _last(out)
    assert res["ok"] and res["id"] == "s1" and res["result"]["config_hash"] == host.cfg.digest()
    assert tomllib.loads(proc.overrides.path.read_text()) == {"report.moving_interval_s": 5}
    assert not proc.overrides.pending_path.exists()


def test_set_config_that_breaks_the_agent_is_rolled_back(rig: Any) -> None:
    proc, host, out = rig
    before = host.cfg
    proc.on_command("set_config", b'{"id":"b1","changes":{"detect.geofences_file":"/broken"}}')
    res = _last(out)
    assert not res["ok"] and "nothing changed" in res["error"]
    assert host.cfg is before
    proc.on_command("set_config", b'{"id":"b2","changes":{"detect.speeding.limit_kmh":80}}')
    assert host.cfg.detect.speeding.limit_kmh == 80.0
    host.problem = "stalled: pipeline"
    proc.tick()
    res = _last(out)
    assert not res["ok"] and "rolled back" in res["error"] and "stalled" in res["error"]
    assert host.cfg == before
    assert not proc.overrides.path.exists() and not proc.overrides.pending_path.exists()


def test_rate_limit_drops_a_flood(rig: Any) -> None:
    proc, _host, out = rig
    for _ in range(100):
        proc.on_command("ping", b'{"id":"f"}')
    assert len(out) <= 12
    assert proc.dropped >= 88
    proc.on_command("bad/+#", b"{}")
    assert proc.dropped >= 89


def test_token_bucket_refills() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 1.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_overrides_round_trip_and_bad_files_are_set_aside(tmp_path: Path) -> None:
    cfg = loads('[device]\nid = "van-9"\n', source="t.toml")
    values = {
        "report.moving_interval_s": 5.0,
        "detect.harsh.brake_bands_mps2": [-3.5, -4.0, -5.5],
        "detect.geofences_file": 'C:\\fences "x".geojson',
        "detect.ignition.rpm_fallback": False,
        "detect.geofence.confirm_fixes": 4,
    }
    assert tomllib.loads(dump_toml(values)) == values
    ov = Overrides(tmp_path)
    ov.write(values)
    merged = ov.apply(cfg)
    assert merged == replace_keys(cfg, values)
    (tmp_path / "overrides.toml").write_text('"mqtt.host" = "evil"\n')
    assert ov.apply(cfg) == cfg
    assert (tmp_path / "overrides.toml.rejected").exists()
    assert not (tmp_path / "overrides.toml").exists()


def test_an_unexpected_failure_still_gets_an_answer(rig: Any) -> None:
    proc, host, out = rig
    host.problem = "disk"
    proc.on_command("flush", b'{"id":"f9"}')
    res = _last(out)
    assert res["ok"] is False and res["id"] == "f9" and res["error"] == "internal error: OSError"


def test_a_change_never_confirmed_is_discarded_at_the_next_start(tmp_path: Path) -> None:
    # The agent stalled or died inside the confirmation window; the watchdog restarted it.
    cfg = loads('[device]\nid = "van-9"\n', source="t.toml")
    ov = Overrides(tmp_path)
    ov.write({"report.moving_interval_s": 7.0})
    ov.stage({"report.moving_interval_s": 7.0, "detect.speeding.limit_kmh": 30.0})
    merged = ov.apply(cfg)
    assert merged.report.moving_interval_s == 7.0, "confirmed overrides stay"
    assert merged.detect.speeding.limit_kmh == cfg.detect.speeding.limit_kmh
    assert not ov.pending_path.exists()
