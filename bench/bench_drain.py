"""Drain benchmark: a 36,000-record backlog through a 100 ms round-trip link vs paho defaults.

Ours: the spool (batches of 100 records, as committed during a 10-hour dead zone at one record
per second) drained by the real publisher (QoS 1, up to 100 in flight) through
``bench.proxy.DelayProxy`` (50 ms each way) to a real mosquitto, until every PUBACK is in and
the spool is empty. Baseline, same run, same link: one compact JSON QoS 1 message per record
with paho's defaults (20 in flight) from memory, no spool at all. At 100 ms per round trip the
baseline needs about 36,000 / 20 x 0.1 s = 180 s; it is measured on BENCH_DRAIN_BASELINE_RECORDS
(default 3,000) and extrapolated linearly (its rate is bound by the round trip, so linear is
exact up to the ramp-up of the first window). Target: ours under 15 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.bench_wire import broker, drain, drive_records, per_record, prefill
from bench.proxy import DelayProxy

RTT_S = 0.1


def run() -> dict[str, float]:
    n = int(os.environ.get("BENCH_DRAIN_RECORDS", "36000"))
    n_base = min(n, int(os.environ.get("BENCH_DRAIN_BASELINE_RECORDS", "3000")))
    work = Path(
        tempfile.mkdtemp(prefix="bench-drain-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    )
    out: dict[str, float] = {"records": float(n), "rtt_ms": RTT_S * 1000}
    b = broker(work)
    try:
        records = drive_records(n)
        for encoding in ("json", "zlib"):
            spool = prefill(work / encoding, records, encoding)
            proxy = DelayProxy(b.host, b.port, rtt_s=RTT_S)
            out[f"ours_{encoding}_s"] = drain(proxy.host, proxy.port, spool)
            spool.close()
            proxy.close()
        proxy = DelayProxy(b.host, b.port, rtt_s=RTT_S)
        t = per_record(proxy.host, proxy.port, records[:n_base])
        proxy.close()
        out["baseline_measured_records"] = float(n_base)
        out["baseline_measured_s"] = t
        out["baseline_extrapolated_s"] = t * n / n_base
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["target_s"] = 15.0
    out["speedup_json_x"] = out["baseline_extrapolated_s"] / out["ours_json_s"]
    out["ours_json_records_per_s"] = n / out["ours_json_s"]
    return out


if __name__ == "__main__":
    started = time.monotonic()
    for key, value in run().items():
        print(f"{key:32s} {value:12,.2f}")
    print(f"{'bench_wall_s':32s} {time.monotonic() - started:12,.2f}")
