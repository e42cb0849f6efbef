"""Spool benchmark: records/s and disk bytes per position record vs persist-queue's plain queue.

Ours: position records batched 100 per entry (what ``spool.max_batch_records`` does), each
entry one persist-queue put (one SQLite transaction, fsync) plus the persisted sequence
counter; then the whole cycle with take and acknowledgement. Baseline, same run, same disk:
``persistqueue.SQLiteAckQueue`` with one put per record (JSON serializer), get and ack per
record. Disk bytes come from ``/proc/self/io`` ``write_bytes`` (what this process sent to the
block layer; tmpfs reports 0, so the files live under /var/tmp on the root disk).

Also: the latency of taking the next entry after 100,000 acknowledged rows, against
persist-queue's ``get`` with those rows left in the table.

Environment: BENCH_SPOOL_RECORDS (default 20000), BENCH_SPOOL_BASELINE_RECORDS (default 1500).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import persistqueue
import persistqueue.serializers.json as json_serializer

from agent.encoder import Encoder, Identity, Message
from agent.sequence import SequenceCounter
from agent.spool import Spool
from bench.bench_wire import drive_records


def _write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _workdir() -> Path:
    base = Path(os.environ.get("BENCH_DIR", "/var/tmp"))
    return Path(tempfile.mkdtemp(prefix="bench-spool-", dir=base))


def _batches(n_records: int, seq: SequenceCounter) -> list[Message]:
    records = drive_records(n_records, first_seq=seq.next_value)
    seq.bump_to(records[-1]["seq"])

    class _NoTime:
        def utc(self, ts_mono: float) -> object:
            raise AssertionError("position_batch does not read the clock")

    enc = Encoder(Identity("van-bench", "boot-bench"), seq, _NoTime())  # type: ignore[arg-type]
    return [
        enc.position_batch(records[i : i + 100], historical=False)
        for i in range(0, len(records), 100)
    ]


def _ours(work: Path, n_records: int) -> dict[str, float]:
    seq = SequenceCounter(work / "seq")
    spool = Spool(work / "spool", seq)
    batches = _batches(n_records, seq)
    os.sync()
    w0, t0 = _write_bytes(), time.perf_counter()
    for b in batches:
        spool.put([b])
    t_put = time.perf_counter() - t0
    w_put = _write_bytes() - w0
    t1 = time.perf_counter()
    while entries := spool.take(100):
        spool.ack_many([e.id for e in entries])
    t_cycle = t_put + time.perf_counter() - t1
    w_cycle = _write_bytes() - w0
    spool.close()
    return {
        "ours_put_records_per_s": n_records / t_put,
        "ours_cycle_records_per_s": n_records / t_cycle,
        "ours_put_bytes_per_record": w_put / n_records,
        "ours_cycle_bytes_per_record": w_cycle / n_records,
    }


def _baseline(work: Path, n_records: int) -> dict[str, float]:
    q = persistqueue.SQLiteAckQueue(str(work / "plain"), serializer=json_serializer)
    records = drive_records(n_records)
    os.sync()
    w0, t0 = _write_bytes(), time.perf_counter()
    for r in records:
        q.put(r)
    t_put = time.perf_counter() - t0
    w_put = _write_bytes() - w0
    t1 = time.perf_counter()
    for _ in range(n_records):
        item = q.get(block=False)
        q.ack(item)
    t_cycle = t_put + time.perf_counter() - t1
    w_cycle = _write_bytes() - w0
    q.close()
    return {
        "plain_put_records_per_s": n_records / t_put,
        "plain_cycle_records_per_s": n_records / t_cycle,
        "plain_put_bytes_per_record": w_put / n_records,
        "plain_cycle_bytes_per_record": w_cycle / n_records,
    }


def _history(work: Path, n_acked: int = 100_000) -> dict[str, float]:
    """Latency of the next take after ``n_acked`` delivered rows: ours vs plain get."""
    row = b'{"lane":"pos","topic":"fleet/v1/van-bench/pos","payload":{"seq":0}}'
    # (seq 0: below the counter, so the spool does not treat it as a lost counter file)
    # Plain persist-queue: acked rows stay until someone calls clear_acked_data.
    plain = persistqueue.SQLiteAckQueue(str(work / "hist-plain"), serializer=json_serializer)
    with sqlite3.connect(work / "hist-plain" / "data.db") as conn:
        conn.executemany(
            "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (?, 0, 5)",
            ((row,) for _ in range(n_acked)),
        )
    plain_lat = []
    for _ in range(20):
        plain.put({"seq": 2})
        t = time.perf_counter()
        item = plain.get(block=False)
        plain_lat.append(time.perf_counter() - t)
        plain.ack(item)
    plain.close()
    # Ours: the same history, delivered and acknowledged through the spool.
    seq = SequenceCounter(work / "hist-seq")
    spool = Spool(work / "hist-ours", seq)
    spool.close()
    with sqlite3.connect(work / "hist-ours" / "data.db") as conn:
        conn.executemany(
            "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (?, 0, 1)",
            ((row,) for _ in range(n_acked)),
        )
    spool = Spool(work / "hist-ours", seq)
    while entries := spool.take(1000):
        spool.ack_many([e.id for e in entries])
    ours_lat = []
    for b in _batches(20 * 100, seq):
        spool.put([b])
        t = time.perf_counter()
        (entry,) = spool.take(1)
        ours_lat.append(time.perf_counter() - t)
        spool.ack(entry.id)
    spool.close()
    return {
        "history_acked_rows": float(n_acked),
        "ours_take_after_history_ms": statistics.median(ours_lat) * 1000,
        "plain_get_after_history_ms": statistics.median(plain_lat) * 1000,
    }


def run() -> dict[str, float]:
    n = int(os.environ.get("BENCH_SPOOL_RECORDS", "20000"))
    n_base = int(os.environ.get("BENCH_SPOOL_BASELINE_RECORDS", "1500"))
    work = _workdir()
    try:
        out = {"records": float(n), "baseline_records": float(n_base)}
        out |= _ours(work, n)
        out |= _baseline(work, n_base)
        out |= _history(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["put_speedup_x"] = out["ours_put_records_per_s"] / out["plain_put_records_per_s"]
    out["cycle_speedup_x"] = out["ours_cycle_records_per_s"] / out["plain_cycle_records_per_s"]
    out["target_speedup_x"] = 10.0
    out["target_bytes_per_record"] = 1536.0
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:36s} {value:14,.2f}")
