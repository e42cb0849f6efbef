"""Configuration loading: defaults, every kind of bad input, and the generated documents."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config, configdoc
from agent.errors import ConfigError

MINIMAL = '[device]\nid = "van-1"\n'
REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL))
    assert cfg.device.id == "van-1"
    assert cfg.mqtt.port == 1883
    assert cfg.spool.flush_interval_s == 10.0
    assert cfg.source.endswith("agent.toml")


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, MINIMAL + "[spool]\nflush_interval_s = 5\n"))
    assert cfg.spool.flush_interval_s == 5.0
    assert isinstance(cfg.spool.flush_interval_s, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[mqtt]\nprot = 1\n", "key 'mqtt.prot': unknown key (did you mean 'port'?)"),
        (MINIMAL + "[mqtt]\nport = \"x\"\n", "key 'mqtt.port': expected an integer"),
        (MINIMAL + "[mqtt]\nport = 70000\n", "key 'mqtt.port': expected an integer from 1 to"),
        (MINIMAL + "[mqtt]\nport = true\n", "key 'mqtt.port': expected an integer, got a boolean"),
        (MINIMAL + "[gnss]\nenabled = 1\n", "key 'gnss.enabled': expected true or false"),
        (MINIMAL + "[obd]\nfuel_type = \"coal\"\n", "key 'obd.fuel_type': expected one of"),
        (MINIMAL + "[mqtt.tls]\nca_file = 3\n", "key 'mqtt.tls.ca_file': expected a string"),
        ("mqtt = 3\n" + MINIMAL, "key 'mqtt': expected a table"),
        (MINIMAL + "[nonsense]\n", "key 'nonsense': unknown key"),
        ('[device]\nid = "bad id!"\n', "key 'device.id': expected"),
        ("[mqtt]\nport = 1\n", "key 'device.id': required"),
        ("[device\n", "not valid TOML"),
        (MINIMAL + "[spool]\nflush_interval_s = nan\n", "expected a finite number"),
        # TOML integers are 64-bit; tomllib reads any size, which float() cannot convert.
        (
            MINIMAL + "[agent]\ntime_scale = 0x" + "f" * 300 + "\n",
            "key 'agent.time_scale': expected a number, got an integer beyond 64 bits",
        ),
        (
            MINIMAL + "[spool]\nmax_bytes = 9223372036854775808\n",
            "key 'spool.max_bytes': expected an integer, got an integer beyond 64 bits",
        ),
        (
            MINIMAL + "[mqtt]\nport = 9223372036854775807\n",
            "key 'mqtt.port': expected an integer from 1 to 65535, got 9223372036854775807",
        ),
        # What tomllib raises besides TOMLDecodeError.
        ("a = 1" + "0" * 5000 + "\n", "not valid TOML: Exceeds the limit (4300 digits)"),
        ("a = " + "[" * 2000 + "\n", "not valid TOML: arrays or tables nested too deeply"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: ")
    assert expected in msg
    assert "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "nope.toml")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_bytes(b"[device]\nid = \"\xff\"\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(p)


def test_replace_keys_validates() -> None:
    cfg = config.loads(MINIMAL)
    new = config.replace_keys(cfg, {"report.moving_interval_s": 5})
    assert new.report.moving_interval_s == 5.0
    assert cfg.report.moving_interval_s == 10.0
    with pytest.raises(ConfigError, match=r"report\.moving_interval_s"):
        config.replace_keys(cfg, {"report.moving_interval_s": -1})
    with pytest.raises(ConfigError, match="unknown key"):
        config.replace_keys(cfg, {"report.nope": 1})


def test_digest_changes_with_values() -> None:
    a = config.loads(MINIMAL)
    b = config.loads(MINIMAL + "[mqtt]\nport = 1884\n")
    assert a.digest() != b.digest()
    assert a.digest() == config.loads(MINIMAL).digest()


def test_example_file_loads_and_documents_every_key() -> None:
    cfg = config.load(configdoc.EXAMPLE)
    assert cfg.device.id == "van-0042"
    text = configdoc.EXAMPLE.read_text()
    for dotted, _default, doc in config.describe():
        assert doc, f"{dotted} has no description"
        assert f"\n{dotted.rsplit('.', 1)[1]} = " in text


def test_generated_documents_are_current() -> None:
    assert configdoc.EXAMPLE.read_text() == configdoc.render_example(), (
        "config/agent.example.toml is stale: run `python -m agent.configdoc`"
    )
    assert configdoc.REFERENCE.read_text() == configdoc.render_reference(), (
        "docs/configuration.md is stale: run `python -m agent.configdoc`"
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_loader_never_raises_anything_but_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        config.loads(text)


def _run_cli(config_path: Path, *, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent.cli", "run", "--config", str(config_path)]
    if unprivileged and os.geteuid() == 0:
        # Root reads a mode-000 file through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: drop both,
        # as the service user lacks them. (Not another uid: the checkout may sit in a directory
        # only root can enter, such as one made by mktemp.) Not root: modes already apply.
        setpriv = shutil.which("setpriv")
        assert setpriv, "running as root needs util-linux's setpriv to test file permissions"
        cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)


def _assert_one_line_exit_2(
    proc: subprocess.CompletedProcess[str], path: Path, expected: str
) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"telematics-agent: {path}: "), lines[0]
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (MINIMAL + "[mqtt]\nbogus = 1\n", "key 'mqtt.bogus': unknown key"),
        (MINIMAL + "[mqtt]\nport = \"many\"\n", "key 'mqtt.port': expected an integer"),
        (MINIMAL + "[mqtt]\nport = 70000\n", "key 'mqtt.port': expected an integer from 1 to 6"),
        (MINIMAL + "[spool]\nflush_interval_s = -1\n", "key 'spool.flush_interval_s': expected"),
        ("[device\nid = 1\n", "not valid TOML: Expected ']' at the end of a table declaration"),
        (MINIMAL + "[mqtt]\nport = 1 2\n", "not valid TOML"),
        (None, "configuration file not found"),
    ],
    ids=["unknown-key", "wrong-type", "out-of-range", "negative", "toml-syntax", "toml-value",
         "missing"],
)
def test_run_exits_2_with_one_line(tmp_path: Path, content: str | None, expected: str) -> None:
    p = tmp_path / "agent.toml"
    if content is not None:
        p.write_text(content)
    _assert_one_line_exit_2(_run_cli(p), p, expected)


def test_run_without_dac_capabilities_on_an_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(MINIMAL + "[mqtt]\nport = 0\n")
    p.chmod(0)
    proc = _run_cli(p, unprivileged=True)
    _assert_one_line_exit_2(proc, p, "cannot read the configuration file (permission denied)")
    # Readable, the same file reaches the loader's checks with the same privileges: the failure
    # above came from the file mode, not from anything else setpriv changed.
    p.chmod(0o644)
    proc = _run_cli(p, unprivileged=True)
    _assert_one_line_exit_2(proc, p, "key 'mqtt.port': expected an integer from 1 to 65535, got 0")
