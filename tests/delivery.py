"""Delivery harness: a van's spool, encoder and publisher wired like the daemon, for tests.

``Van`` feeds synthetic 1 Hz GNSS fixes (and an event every few minutes) through the real
pipeline core, commits to a real SQLite spool and publishes with the real publisher.
``python -m tests.delivery drain STATE_DIR HOST PORT`` runs only the publisher over an
existing spool (the process the kill -9 test kills).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.clock import VirtualClock
from agent.config import MQTTSection, ReportSection, TLSSection
from agent.encoder import Encoder, Identity, Lane, Message
from agent.events import Event, EventType
from agent.pipeline import NullDetector, PipelineCore
from agent.publisher import Publisher
from agent.reporter import PositionReporter
from agent.sequence import SequenceCounter
from agent.spool import Spool
from agent.timebase import TimeBase, iso
from drivers.samples import FixMode, FixQuality, GNSSFix
from simulator.broker import Mosquitto
from tests.listener import Listener, Received

START_UTC = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def mqtt_settings(host: str, port: int, **kw: Any) -> MQTTSection:
    tls = kw.pop("tls", TLSSection())
    defaults: dict[str, Any] = {"backoff_min_s": 0.2, "backoff_max_s": 1.0, "keepalive_s": 10}
    return MQTTSection(host=host, port=port, tls=tls, **{**defaults, **kw})


class Van:
    """One simulated van's delivery path in this process."""

    def __init__(
        self,
        state_dir: Path,
        mqtt: MQTTSection,
        *,
        device_id: str = "van-1",
        encoding: str = "json",
        max_batch_records: int = 100,
        flush_interval_s: float = 10.0,
        max_bytes: int = 64 * 1024 * 1024,
        start: bool = True,
        on_command: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.clock = VirtualClock(0.0, START_UTC)
        self.identity = Identity(device_id, f"boot-{device_id}", mqtt.prefix)
        self.seq = SequenceCounter(state_dir / "seq")
        self.spool = Spool(state_dir / "spool", self.seq, max_bytes=max_bytes)
        self.timebase = TimeBase(self.clock)
        self.encoder = Encoder(self.identity, self.seq, self.timebase, position_encoding=encoding)
        self.core = PipelineCore(
            self.encoder,
            NullDetector(),
            PositionReporter(ReportSection(min_interval_s=0.0)),
            self.timebase,
            flush_interval_s=flush_interval_s,
            max_batch_records=max_batch_records,
        )
        self.publisher = Publisher(
            mqtt, self.identity, self.spool, birth=self.state_payload, on_command=on_command
        )
        self.t_s = 0.0
        self.events = 0
        if start:
            self.publisher.start()

    def state_payload(self, online: bool) -> dict[str, Any]:
        ts, source = self.timebase.utc(self.clock.monotonic())
        return {
            "schema": "state/1",
            "device_id": self.identity.device_id,
            "boot_id": self.identity.boot_id,
            "seq": self.seq.last_value,
            "ts": iso(ts),
            "time_source": str(source),
            "online": online,
            "version": "test",
            "config_hash": "0" * 12,
        }

    def drive(self, seconds: int, *, real_s: float = 0.0, event_every_s: int = 300) -> None:
        """``seconds`` of 1 Hz fixes (spread over ``real_s`` of wall time), events included."""
        pace = real_s / seconds if seconds else 0.0
        started = time.monotonic()
        for i in range(seconds):
            self.t_s += 1.0
            self.clock.advance_to(self.t_s)
            out = self.core.handle(fix_at(self.t_s))
            if int(self.t_s) % event_every_s == 0:
                self.events += 1
                ev = Event(
                    EventType.HARSH_BRAKE,
                    self.t_s,
                    52.5,
                    13.4,
                    {"peak_mps2": -3.4, "duration_s": 0.8, "speed_kmh": 42.0, "severity": 1},
                )
                out.append(self.encoder.event(ev))
            self.commit(out)
            ahead = started + (i + 1) * pace - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    def commit(self, messages: Iterable[Message]) -> None:
        durable = []
        for m in messages:
            if m.lane is Lane.LIVE:
                self.publisher.publish_live(m)
            else:
                durable.append(m)
        self.spool.put(durable)

    def park(self) -> None:
        """Commit the positions still waiting in memory (what a clean stop does)."""
        self.commit(self.core.flush())

    def stop(self) -> None:
        self.park()
        self.publisher.stop(timeout_s=5)
        self.spool.close()


def fix_at(t_s: float) -> GNSSFix:
    """A van circling a block in Berlin at about 36 km/h, one fix per second."""
    angle = t_s / 600 * 2 * math.pi
    return GNSSFix(
        ts_mono=t_s,
        utc=START_UTC + dt.timedelta(seconds=t_s),
        lat=52.52 + 0.01 * math.sin(angle),
        lon=13.40 + 0.016 * math.cos(angle),
        alt_m=35.0 + 3 * math.sin(angle * 3),
        speed_mps=10.0 + math.sin(t_s / 17),
        course_deg=(math.degrees(angle) + 90) % 360,
        mode=FixMode.FIX_3D,
        quality=FixQuality.GPS,
        sats=9 + int(t_s) % 3,
        hdop=0.9,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Delivered:
    """What a backend would have after deduplicating by (device_id, seq)."""

    seqs: list[int]  # unique, sorted
    received: int  # records + events received, duplicates included
    duplicates: int
    historical: int  # pos batches marked historical


def delivered(messages: list[Received], device_id: str = "van-1") -> Delivered:
    from agent.encoder import batch_records

    counts: Counter[int] = Counter()
    historical = 0
    for m in messages:
        if f"/{device_id}/" not in m.topic or not m.payload:
            continue
        payload = m.json()
        if m.topic.endswith("/pos"):
            historical += bool(payload["historical"])
            counts.update(r["seq"] for r in batch_records(payload))
        elif "/event/" in m.topic:
            counts[payload["seq"]] += 1
    return Delivered(
        seqs=sorted(counts),
        received=sum(counts.values()),
        duplicates=sum(c - 1 for c in counts.values()),
        historical=historical,
    )


def start_broker(broker: Mosquitto) -> None:
    """Start ``broker`` after dropping repeated ``user`` lines from its configuration.

    Both the broker runner and ``tests.pki``'s TLS lines may say ``user root`` (mosquitto must
    not drop privileges in tests); mosquitto refuses a configuration that says it twice.
    """
    lines = broker.conf.read_text().splitlines()
    seen_user = False
    kept = []
    for line in lines:
        if line.startswith("user "):
            if seen_user:
                continue
            seen_user = True
        kept.append(line)
    broker.conf.write_text("\n".join(kept) + "\n")
    broker.start()


def wait_listening(listener: Listener, host: str, port: int, timeout_s: float = 10.0) -> None:
    """Block until ``listener`` is subscribed again (after a broker restart): probe it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    probe = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    deadline = time.monotonic() + timeout_s
    marker = f"probe/{time.time_ns()}"
    probe.connect(host, port)
    probe.loop_start()
    try:
        while time.monotonic() < deadline:
            probe.publish(marker, b"", qos=0)
            if listener.wait_for(lambda ms: any(m.topic == marker for m in ms), 0.3):
                return
        raise AssertionError("listener did not come back after the broker restart")
    finally:
        probe.loop_stop()
        probe.disconnect()


def _drain(state_dir: str, host: str, port: str) -> None:
    van = Van(Path(state_dir), mqtt_settings(host, int(port), max_inflight=5), start=False)
    van.publisher.start()
    print("draining", flush=True)
    stop = threading.Event()
    stop.wait(3600)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "drain":
        _drain(*sys.argv[2:])
    else:
        print("usage: python -m tests.delivery drain STATE_DIR HOST PORT", file=sys.stderr)
        sys.exit(2)
