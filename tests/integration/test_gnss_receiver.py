"""The GNSS receiver thread against a receiver talking NMEA on a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.gnss import AUTO_BAUDS, GNSSReceiver, GNSSSettings
from drivers.samples import GNSSFix, LinkSample, LinkState, Sample
from simulator.nmea import Epoch, Satellite, Talker, encode_epoch, frame
from simulator.pty import PtyDevice
from tests.samples import SampleCollector

START_UTC = dt.datetime(2025, 6, 2, 8, 0, 0, tzinfo=dt.UTC)
RATE_HZ = 10.0


class Line:
    """A receiver on a pseudo-terminal writing one epoch every 0.1 s (the simulator's encoder)."""

    def __init__(self, device: PtyDevice) -> None:
        self.device = device
        self.knows_time = True
        self.fix = True
        self.silent = False
        self.corrupt_next = 0
        self.gga_only = False  # a receiver set to send GGA alone: times of day, never a date
        self.inject = b""
        self.epochs = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def utc_of(self, n: int) -> dt.datetime:
        return START_UTC + dt.timedelta(seconds=n / RATE_HZ)

    def _run(self) -> None:
        sats = tuple(Satellite(p, 40, 90, 40) for p in (2, 5, 7, 9, 13, 15))
        while not self._stop.wait(1.0 / RATE_HZ):
            with self._lock:
                n, self.epochs = self.epochs, self.epochs + 1
                inject, self.inject = self.inject, b""
                utc = self.utc_of(n) if self.knows_time else None
                epoch = Epoch(
                    utc=utc,
                    fix=self.fix,
                    lat=52.5 + n * 1e-5 if self.fix else 0.0,
                    lon=13.4 if self.fix else 0.0,
                    alt_m=40.0,
                    speed_knots=10.0,
                    course_deg=90.0,
                    used_prns=(2, 5, 7, 9, 13, 15) if self.fix else (),
                    hdop=0.9 if self.fix else 99.99,
                    pdop=1.5 if self.fix else 99.99,
                    satellites=sats,
                )
                out = bytearray(inject)
                for body in encode_epoch(Talker.GP, epoch, with_satellites=n % 10 == 0):
                    if self.gga_only and body[2:5] != "GGA":
                        continue
                    corrupt = self.corrupt_next > 0
                    self.corrupt_next -= int(corrupt)
                    out += frame(body, corrupt=corrupt).encode()
                if not self.silent:
                    self.device.write(bytes(out))

    def set(self, **changes: object) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self, name, value)


def is_state(state: LinkState) -> Callable[[Sample], bool]:
    return lambda s: isinstance(s, LinkSample) and s.state is state


def is_fix(s: Sample) -> bool:
    return isinstance(s, GNSSFix)


Rig = tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with _rig(tmp_path / "gnss0") as parts:
        yield parts


@contextlib.contextmanager
def _rig(path: Path, baud: int | None = None) -> Iterator[Rig]:
    """A receiver on a pty (a real UART at ``baud``, if given) and a factory of driver threads."""
    device = PtyDevice(path, baud=baud)
    device.plug()
    line = Line(device)
    collector = SampleCollector()
    receivers: list[GNSSReceiver] = []

    def make(**kw: object) -> GNSSReceiver:
        extra = {"date_hint": kw.pop("date_hint")} if "date_hint" in kw else {}
        settings = GNSSSettings(port=str(device.link_path), **kw)  # type: ignore[arg-type]
        rx = GNSSReceiver(settings, collector, time.monotonic, **extra)  # type: ignore[arg-type]
        receivers.append(rx)
        rx.start()
        return rx

    line.start()
    try:
        yield device, line, collector, make
    finally:
        for rx in receivers:
            rx.stop()
        line.stop()
        device.unplug()


def test_cold_start_then_fix(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    _, line, collector, make = rig
    line.set(knows_time=False, fix=False)
    rx = make()
    no_fix = collector.wait_for(is_state(LinkState.NO_FIX), 3.0)[1]
    assert isinstance(no_fix, LinkSample) and no_fix.reason == "rmc status V"
    assert collector.fixes() == []
    line.set(knows_time=True, fix=True)
    collector.wait_for(is_state(LinkState.UP), 3.0)
    fix = collector.wait_for(is_fix, 3.0)[1]
    assert isinstance(fix, GNSSFix) and fix.utc >= START_UTC and fix.mode == 3
    time.sleep(0.5)
    utcs = [f.utc for f in collector.fixes()]
    assert utcs == sorted(set(utcs)) and len(utcs) >= 4  # one fix per epoch, in order
    assert collector.links()[:2] == [("no_fix", "rmc status V"), ("up", "fix")]
    assert rx.last_progress > time.monotonic() - 1.0


def test_gga_only_receiver_dates_its_fixes_from_a_synchronized_clock(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    _, line, collector, make = rig
    line.set(gga_only=True)
    synced: list[bool] = [False]
    started = time.monotonic()

    def clock() -> dt.datetime | None:
        # The receiver's own time now, as a synchronized system clock would tell it.
        return START_UTC + dt.timedelta(seconds=line.epochs / RATE_HZ) if synced[0] else None

    make(date_hint=clock)
    no_fix = collector.wait_for(is_state(LinkState.NO_FIX), 3.0)[1]
    assert isinstance(no_fix, LinkSample) and no_fix.reason == "no date yet"
    time.sleep(0.5)
    assert collector.fixes() == []  # an unproven clock gives no date, so no fix
    synced[0] = True
    t_synced = time.monotonic()
    collector.wait_for(is_state(LinkState.UP), 3.0, after=t_synced)
    time.sleep(0.5)
    synced[0] = False  # the date, once known, rolls on by itself
    time.sleep(0.5)
    fixes = collector.fixes()
    assert len(fixes) >= 8, fixes
    for fix in fixes:
        # Exactly the epoch's time (the line writes epoch n at START_UTC + n/10 s).
        n = round((fix.utc - START_UTC).total_seconds() * RATE_HZ)
        assert fix.utc == line.utc_of(n) and n > 0, fix
        assert fix.speed_mps is None  # GGA carries no speed; nothing made one up
    assert time.monotonic() - started < 10.0


def test_fix_loss_and_recovery(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    _, line, collector, make = rig
    make()
    collector.wait_for(is_state(LinkState.UP), 3.0)
    line.set(fix=False)
    t_lost = time.monotonic()
    collector.wait_for(is_state(LinkState.NO_FIX), 2.0, after=t_lost)
    t_nofix = time.monotonic()
    time.sleep(0.5)
    lost_fixes = [s for t, s in collector.samples if t > t_nofix and isinstance(s, GNSSFix)]
    assert lost_fixes == []  # stale coordinates of void epochs never become fixes
    line.set(fix=True)
    collector.wait_for(is_state(LinkState.UP), 2.0, after=t_nofix)
    states = [state for state, _ in collector.links()]
    assert states == ["up", "no_fix", "up"]  # transitions only, no repeats


def test_garbage_bad_checksums_and_overlong_lines(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    _, line, collector, make = rig
    rx = make()
    collector.wait_for(is_fix, 3.0)
    junk = b"\x00\x00\x00\xff\xfe\x80garbage" + b"$GPGGA,0800" + b"$GPTXT," + b"A" * 400 + b"\r\n"
    line.set(inject=junk, corrupt_next=5)
    time.sleep(1.0)
    t0 = time.monotonic()
    collector.wait_for(is_fix, 2.0, after=t0)
    stats = rx.stats()
    assert stats["bad_checksum"] == 5
    assert stats["overlong_lines"] == 1
    assert stats["garbage_bytes"] >= 20
    assert [state for state, _ in collector.links()] == ["up"]


def test_unplug_and_replug_resumes_fixes_within_3_s(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    device, _, collector, make = rig
    rx = make()
    collector.wait_for(is_fix, 3.0)
    t_unplug = time.monotonic()
    device.unplug()
    down = collector.wait_for(is_state(LinkState.DOWN), 2.0, after=t_unplug)[1]
    assert isinstance(down, LinkSample) and down.reason == "device disappeared"
    time.sleep(1.5)  # the receiver retries a missing device meanwhile
    device.replug()
    t_back = time.monotonic()
    collector.wait_for(is_fix, 3.0, after=t_back)
    assert time.monotonic() - t_back < 3.0
    assert [state for state, _ in collector.links()] == ["up", "down", "up"]
    assert rx.stats()["reconnects"] == 2


def test_silence_is_reported_down(
    rig: tuple[PtyDevice, Line, SampleCollector, Callable[..., GNSSReceiver]],
) -> None:
    _, line, collector, make = rig
    make(silence_timeout_s=1.0)
    collector.wait_for(is_fix, 3.0)
    line.set(silent=True)
    down = collector.wait_for(is_state(LinkState.DOWN), 3.0)[1]
    assert isinstance(down, LinkSample) and down.reason == "no data for 1 s"
    line.set(silent=False)
    collector.wait_for(is_state(LinkState.UP), 3.0, after=time.monotonic())


def test_missing_port_is_reported_and_retried(tmp_path: Path) -> None:
    collector = SampleCollector()
    path = tmp_path / "gnss9"
    rx = GNSSReceiver(GNSSSettings(port=str(path)), collector, time.monotonic)
    rx.start()
    try:
        down = collector.wait_for(is_state(LinkState.DOWN), 2.0)[1]
        assert isinstance(down, LinkSample) and down.reason.startswith(f"cannot open {path}:")
        time.sleep(0.5)
        assert rx.stats()["open_failures"] >= 2
        assert len(collector.links()) == 1  # reported once, not on every retry
    finally:
        rx.stop()


# A pty passes bytes at any speed; these tests give the simulated receiver a real UART's
# behaviour (simulator.pty.misread), so a reader at the wrong speed gets garbage.
PROBE_S = 1.5  # drivers.gnss._detect_baud's time per speed


def test_wrong_baud_gives_garbage_and_no_fix(tmp_path: Path) -> None:
    with _rig(tmp_path / "gnss0", baud=19200) as (device, _, collector, make):
        rx = make(baud=9600)
        time.sleep(1.5)  # 15 epochs
        assert device.line_baud() == 9600  # the driver's setting, seen from the device side
        assert collector.fixes() == []
        assert rx.stats()["sentences_ok"] == 0
        assert rx.stats()["garbage_bytes"] > 1000
        assert device.bytes_garbled > 0


@pytest.mark.parametrize("baud", [4800, 38400])
def test_baud_auto_detection_finds_the_receivers_speed(tmp_path: Path, baud: int) -> None:
    with _rig(tmp_path / "gnss0", baud=baud) as (device, _, collector, make):
        rx = make(baud=0)
        tried = AUTO_BAUDS.index(baud)  # speeds probed in vain before this one
        fix = collector.wait_for(is_fix, tried * PROBE_S + 3.0)[1]
        assert isinstance(fix, GNSSFix) and abs(fix.lat - 52.5) < 0.01
        assert device.line_baud() == baud  # the driver left the port at the receiver's speed
        assert rx.stats()["sentences_ok"] > 0


def test_replug_after_auto_detection_tries_the_last_speed_first(tmp_path: Path) -> None:
    """Probing 4800 and 9600 again (1.5 s each) would miss the 3 s replug target."""
    baud = 19200
    with _rig(tmp_path / "gnss0", baud=baud) as (device, _, collector, make):
        make(baud=0)
        collector.wait_for(is_fix, 2 * PROBE_S + 3.0)
        device.unplug()
        collector.wait_for(is_state(LinkState.DOWN), 2.0)
        time.sleep(0.5)
        device.replug()  # a new pty: its speed is the kernel's default until the driver sets it
        t_back = time.monotonic()
        collector.wait_for(is_fix, 3.0, after=t_back)
        assert device.line_baud() == baud


def test_socket_url_works_without_code_changes() -> None:
    import socket

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(5.0)
        conn, _ = server.accept()
        with conn:
            n = 0
            while not stop.wait(0.1):
                epoch = Epoch(
                    utc=START_UTC + dt.timedelta(seconds=n),
                    fix=True,
                    lat=48.1,
                    lon=11.5,
                    alt_m=500.0,
                    speed_knots=1.0,
                    course_deg=0.0,
                    used_prns=(1, 2, 3, 4),
                    hdop=1.0,
                    pdop=1.8,
                )
                data = "".join(frame(b) for b in encode_epoch(Talker.GN, epoch)).encode()
                try:
                    conn.sendall(data)
                except OSError:
                    return
                n += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    collector = SampleCollector()
    rx = GNSSReceiver(GNSSSettings(port=f"socket://127.0.0.1:{port}"), collector, time.monotonic)
    rx.start()
    try:
        fix = collector.wait_for(is_fix, 5.0)[1]
        assert isinstance(fix, GNSSFix) and abs(fix.lat - 48.1) < 1e-6
    finally:
        rx.stop()
        stop.set()
        thread.join(5.0)
        server.close()
