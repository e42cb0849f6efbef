"""Wire benchmark: bytes on the wire per position record vs one compact JSON message per record.

Bytes are counted by a relay between the client and a real mosquitto (``bench.proxy``): every
MQTT packet in both directions (CONNECT, SUBSCRIBE, birth, PUBLISH, PUBACK), amortized over the
records. No TLS (it adds ~30 bytes per TLS record plus the handshake, the same for every
variant). Ours: the spool drained by the real publisher, batches of 100 records, JSON and
zlib-columns encodings, fixes every 1 s and every 10 s (the default moving interval). Baseline,
same run: one QoS 1 message per record carrying the record alone as compact JSON (the device
id only in the topic), paho defaults. Reference: a Teltonika Codec 8 AVL packet with one record
and no IO elements is 45 bytes (a constant, not measured).

Also measured: the live lane (the retained newest position, QoS 0), which is sent on top of the
batches while connected: its bytes per message, to be multiplied by the live rate
(``mqtt.live_min_interval_s`` bounds it).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MQTTSection
from agent.encoder import Encoder, Identity, Lane, Message
from agent.publisher import Publisher
from agent.sequence import SequenceCounter
from agent.spool import Spool
from agent.timebase import iso
from bench.proxy import DelayProxy
from simulator.broker import Mosquitto

CODEC8_ONE_RECORD_B = 45.0
START = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
DEVICE = "van-bench"


def drive_records(
    n: int, *, first_seq: int = 1, interval_s: float = 1.0, seed: int = 1
) -> list[dict[str, Any]]:
    """``n`` position records as the encoder writes them: a van in town, GNSS noise included."""
    rng = random.Random(seed)
    lat, lon, alt, speed, course = 52.52, 13.40, 35.0, 30.0, 90.0
    out: list[dict[str, Any]] = []
    for i in range(n):
        speed = max(0.0, min(90.0, speed + rng.gauss(0, 2.0 * math.sqrt(interval_s))))
        course = (course + rng.gauss(0, 3.0 * math.sqrt(interval_s))) % 360
        step_m = speed / 3.6 * interval_s
        lat += step_m * math.cos(math.radians(course)) / 111_320
        lon += step_m * math.sin(math.radians(course)) / (111_320 * math.cos(math.radians(lat)))
        alt += rng.gauss(0, 0.3)
        out.append(
            {
                "seq": first_seq + i,
                "ts": iso(START + dt.timedelta(seconds=i * interval_s)),
                "lat": round(lat + rng.gauss(0, 2e-6), 7),
                "lon": round(lon + rng.gauss(0, 2e-6), 7),
                "alt_m": round(alt, 1),
                "speed_kmh": round(speed, 1),
                "course_deg": round(course, 1),
                "hdop": round(0.7 + rng.random() * 0.5, 1),
                "sats": rng.randint(8, 12),
                "reason": "every_fix" if interval_s <= 1 else "interval",
            }
        )
    return out


class _NoClock:
    def utc(self, ts_mono: float) -> object:
        raise AssertionError("position_batch does not read the clock")


def prefill(directory: Path, records: list[dict[str, Any]], encoding: str) -> Spool:
    """A spool holding ``records`` in batches of 100, as the pipeline would have committed."""
    seq = SequenceCounter(directory / "seq")
    seq.bump_to(records[-1]["seq"])
    spool = Spool(directory / "spool", seq)
    enc = Encoder(Identity(DEVICE, "boot-bench"), seq, _NoClock(), position_encoding=encoding)  # type: ignore[arg-type]
    batches: list[Message] = [
        enc.position_batch(records[i : i + 100], historical=True)
        for i in range(0, len(records), 100)
    ]
    spool.put(batches)
    return spool


def _birth(online: bool) -> dict[str, Any]:
    return {
        "schema": "state/1",
        "device_id": DEVICE,
        "boot_id": "boot-bench",
        "seq": 0,
        "ts": iso(START),
        "time_source": "system",
        "online": online,
    }


def drain(host: str, port: int, spool: Spool, timeout_s: float = 600.0) -> float:
    """Seconds from publisher start until the broker has acknowledged the whole spool."""
    settings = MQTTSection(host=host, port=port, backoff_min_s=0.1, backoff_max_s=1.0)
    pub = Publisher(settings, Identity(DEVICE, "boot-bench"), spool, birth=_birth)
    started = time.perf_counter()
    pub.start()
    deadline = time.monotonic() + timeout_s
    while spool.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if spool.depth():
        raise RuntimeError(f"drain did not finish: {pub.stats()}")
    pub.stop(timeout_s=5)
    return elapsed


def per_record(
    host: str, port: int, records: list[dict[str, Any]], timeout_s: float = 600.0
) -> float:
    """Baseline: one compact JSON QoS 1 message per record at paho's defaults; seconds taken."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="baseline-van")
    acked = 0

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        nonlocal acked
        acked += 1

    client.on_publish = on_publish
    started = time.perf_counter()
    client.connect(host, port)
    client.loop_start()
    topic = f"fleet/v1/{DEVICE}/pos"
    for r in records:
        client.publish(topic, json.dumps(r, separators=(",", ":")), qos=1)
    deadline = time.monotonic() + timeout_s
    while acked < len(records) and time.monotonic() < deadline:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def live_lane(host: str, port: int, records: list[dict[str, Any]], spool: Spool) -> None:
    """Each record also on the retained live topic, one at a time (nothing coalesced)."""
    settings = MQTTSection(host=host, port=port, backoff_min_s=0.1, backoff_max_s=1.0)
    identity = Identity(DEVICE, "boot-bench")
    pub = Publisher(settings, identity, spool, birth=_birth)
    pub.start()
    deadline = time.monotonic() + 30
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    for r in records:
        payload = {k: v for k, v in r.items() if k != "reason"}
        payload.update(schema="live/1", device_id=DEVICE, boot_id="boot-bench", time_source="gnss")
        sent = pub.published
        pub.publish_live(Message(identity.topic("live"), payload, Lane.LIVE, retain=True))
        while pub.published == sent and time.monotonic() < deadline:
            time.sleep(0.001)
    pub.stop(timeout_s=5)


def broker(work: Path) -> Mosquitto:
    d = work / "broker"
    d.mkdir()
    b = Mosquitto(d)
    b.start()
    return b


def run() -> dict[str, float]:
    n = int(os.environ.get("BENCH_WIRE_RECORDS", "3600"))
    work = Path(tempfile.mkdtemp(prefix="bench-wire-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    out: dict[str, float] = {"records": float(n)}
    b = broker(work)
    try:
        for interval_s, tag in ((1.0, "1s"), (10.0, "10s")):
            records = drive_records(n, interval_s=interval_s)
            for encoding in ("json", "zlib"):
                proxy = DelayProxy(b.host, b.port)
                spool = prefill(work / f"{tag}-{encoding}", records, encoding)
                drain(proxy.host, proxy.port, spool)
                spool.close()
                time.sleep(0.1)
                out[f"ours_{encoding}_{tag}_up_b_per_record"] = proxy.bytes_up / n
                out[f"ours_{encoding}_{tag}_total_b_per_record"] = (
                    proxy.bytes_up + proxy.bytes_down
                ) / n
                proxy.close()
            if tag == "1s":
                proxy = DelayProxy(b.host, b.port)
                empty = Spool(work / "live" / "spool", SequenceCounter(work / "live" / "seq"))
                live_lane(proxy.host, proxy.port, records[:500], empty)
                empty.close()
                time.sleep(0.1)
                out["live_lane_total_b_per_message"] = (proxy.bytes_up + proxy.bytes_down) / 500
                proxy.close()
            proxy = DelayProxy(b.host, b.port)
            per_record(proxy.host, proxy.port, records)
            time.sleep(0.1)
            out[f"plain_{tag}_up_b_per_record"] = proxy.bytes_up / n
            out[f"plain_{tag}_total_b_per_record"] = (proxy.bytes_up + proxy.bytes_down) / n
            proxy.close()
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["codec8_one_record_b"] = CODEC8_ONE_RECORD_B
    out["target_zlib_b_per_record"] = 35.0
    out["ratio_plain_over_zlib_1s"] = (
        out["plain_1s_total_b_per_record"] / out["ours_zlib_1s_total_b_per_record"]
    )
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:36s} {value:12,.2f}")
