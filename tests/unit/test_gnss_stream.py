"""GNSSStream (sans-IO link states); the clock setter is in test_clock_setter.py."""

from __future__ import annotations

from drivers.gnss import GNSSSettings, GNSSStream
from drivers.samples import GNSSFix, Link, LinkSample, LinkState, Sample


def frame(body: str) -> bytes:
    csum = 0
    for ch in body.encode("ascii"):
        csum ^= ch
    return f"${body}*{csum:02X}\r\n".encode("ascii")


def epoch(second: int, *, fix: bool = True) -> bytes:
    t = f"1200{second:02d}.00"
    status, quality = ("A", 1) if fix else ("V", 0)
    return frame(f"GNRMC,{t},{status},5230.000,N,01324.000,E,1.0,90.0,020625,,,A") + frame(
        f"GNGGA,{t},5230.000,N,01324.000,E,{quality},07,1.1,40.0,M,47.0,M,,"
    )


def states(samples: list[Sample]) -> list[tuple[LinkState, str]]:
    return [(s.state, s.reason) for s in samples if isinstance(s, LinkSample)]


def run(stream: GNSSStream, seconds: range, *, fix: bool = True) -> list[Sample]:
    out: list[Sample] = []
    for s in seconds:
        out += stream.feed(epoch(s, fix=fix), float(s))
        out += stream.tick(float(s) + 0.5)  # the quiet gap between bursts closes the epoch
    return out


def test_transitions_only() -> None:
    stream = GNSSStream()
    out = run(stream, range(0, 5))
    assert states(out) == [(LinkState.UP, "fix")]
    assert len([s for s in out if isinstance(s, GNSSFix)]) == 5
    assert isinstance(out[0], LinkSample) and out[0].link is Link.GNSS
    out = run(stream, range(5, 8), fix=False)
    assert states(out) == [(LinkState.NO_FIX, "rmc status V")]
    assert not any(isinstance(s, GNSSFix) for s in out)
    out = run(stream, range(8, 10))
    assert states(out) == [(LinkState.UP, "fix")]


def test_silence_then_down_once() -> None:
    stream = GNSSStream(silence_timeout_s=5.0)
    run(stream, range(0, 2))
    assert stream.tick(5.0) == []
    out = stream.tick(6.5) + stream.tick(7.0) + stream.tick(30.0)
    assert states(out) == [(LinkState.DOWN, "no data for 5 s")]


def test_fix_timeout_when_epochs_stop_carrying_fixes() -> None:
    stream = GNSSStream(fix_timeout_s=3.0, silence_timeout_s=60.0)
    run(stream, range(0, 2))
    # Bytes keep flowing but never form an epoch (say, every sentence fails its checksum).
    out: list[Sample] = []
    for t in range(2, 6):
        out += stream.feed(b"$GNRMC,bad*00\r\n", float(t)) + stream.tick(float(t))
    assert states(out) == [(LinkState.NO_FIX, "no fix for 3 s")]


def test_device_lost_and_back() -> None:
    stream = GNSSStream()
    run(stream, range(0, 2))
    out = stream.device_lost(2.0, "device disappeared") + stream.device_lost(2.5, "cannot open")
    assert states(out) == [(LinkState.DOWN, "device disappeared")]
    assert stream.device_back(3.0) == []
    out = stream.feed(b"00,A,5230.000,N*3F\r\n", 3.1)  # the tail of a sentence cut by the unplug
    out += run(stream, range(4, 6))
    assert states(out) == [(LinkState.UP, "fix")]


def test_replay_is_deterministic() -> None:
    chunks = [(epoch(s)[: 10 + s], float(s)) for s in range(10)]
    chunks += [(epoch(s)[10 + s :], s + 0.2) for s in range(10)]
    chunks.sort(key=lambda c: c[1])

    def replay() -> list[Sample]:
        stream = GNSSStream()
        out: list[Sample] = []
        for data, ts in chunks:
            out += stream.feed(data, ts) + stream.tick(ts)
        return out + stream.tick(100.0)

    first = replay()
    assert first == replay()
    assert len([s for s in first if isinstance(s, GNSSFix)]) == 10


def test_settings_mirror_the_config_section() -> None:
    from agent.config import GNSSSection  # tests may import both sides of the seam

    section = GNSSSection()
    settings = GNSSSettings()
    for name in (
        "port",
        "baud",
        "checksum_policy",
        "missing_checksum",
        "silence_timeout_s",
        "set_system_clock",
    ):
        assert getattr(settings, name) == getattr(section, name), name


def test_unplug_emits_the_epoch_already_received_and_drops_the_partial_line() -> None:
    stream = GNSSStream()
    out = stream.feed(epoch(0) + epoch(1)[:30], 0.0)  # epoch 1 cut mid-sentence by the unplug
    out += stream.device_lost(0.1, "device disappeared")
    fixes = [s for s in out if isinstance(s, GNSSFix)]
    assert [f.utc.second for f in fixes] == [0]
    assert states(out) == [(LinkState.UP, "fix"), (LinkState.DOWN, "device disappeared")]
    assert stream.decoder.stats()["garbage_bytes"] == 0  # the cut line is forgotten, not parsed
