"""Spool against real SQLite files: order, acks, byte bound and eviction, quarantine, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.encoder import Lane, Message
from agent.sequence import SequenceCounter
from agent.spool import DB_FILE, Spool


def pos(seq: int, n_records: int = 10) -> Message:
    records = [
        {"seq": seq + i, "ts": "2026-11-20T10:00:00.000Z", "lat": 52.5, "lon": 13.4}
        for i in range(n_records)
    ]
    return Message("fleet/v1/van-1/pos", {"seq": seq, "records": records}, Lane.POSITION)


def event(seq: int) -> Message:
    return Message(
        "fleet/v1/van-1/event/harsh_brake", {"seq": seq, "type": "harsh_brake"}, Lane.EVENT
    )


def open_spool(d: Path, **kw: int) -> Spool:
    return Spool(d / "spool", SequenceCounter(d / "seq"), **kw)  # type: ignore[arg-type]


def test_entries_come_back_in_order_and_acked_ones_stay_gone(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.put([pos(1), event(11), pos(12)])
    spool.put([Message("fleet/v1/van-1/live", {"seq": 20}, Lane.LIVE)])  # never spooled
    taken = spool.take(10)
    assert [e.message.payload["seq"] for e in taken] == [1, 11, 12]
    assert [e.message.lane for e in taken] == [Lane.POSITION, Lane.EVENT, Lane.POSITION]
    spool.ack(taken[0].id)
    spool.nack(taken[1].id)
    spool.nack(taken[2].id)
    assert [e.message.payload["seq"] for e in spool.take(10)] == [11, 12]
    spool.close()
    reopened = open_spool(tmp_path)
    # Taken but never acknowledged: ready again after a restart (at-least-once).
    assert [e.message.payload["seq"] for e in reopened.take(10)] == [11, 12]
    assert reopened.stats()["depth"] == 2


def test_acked_rows_are_cleared_so_take_stays_cheap(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(0, 3000, 10):
        spool.put([pos(i)])
    while entries := spool.take(100):
        for e in entries:
            spool.ack(e.id)
    spool.put([pos(5000)])
    # Without clearing, the table would hold 300 acked rows that every get scans past.
    assert spool.table_rows() < 70
    assert [e.message.payload["seq"] for e in spool.take(5)] == [5000]
    stats = spool.stats()
    assert stats["acked"] == 300 and stats["committed"] == 301 and stats["depth"] == 1


def test_full_spool_evicts_oldest_positions_first_then_events(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=65536)
    spool.put([event(1)])
    for i in range(100):
        spool.put([pos(100 + i * 10, n_records=20)])  # ~1.3 KB each: about 50 fit
    stats = spool.stats()
    assert stats["bytes"] <= 65536
    assert stats["evicted_positions"] > 0
    assert stats["evicted_events"] == 0
    seqs = [e.message.payload["seq"] for e in spool.take(1000)]
    assert seqs[0] == 1, "the event survives while position batches can be evicted"
    assert seqs[1:] == sorted(seqs[1:]) and seqs[-1] == 100 + 99 * 10, "newest batches kept"
    assert len(seqs) - 1 + stats["evicted_positions"] == 100, "every eviction is counted"


def test_events_are_evicted_last_and_counted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=65536)
    big = {"seq": 0, "type": "dtc_set", "data": {"blob": "x" * 4000}}
    for i in range(30):
        spool.put([Message("fleet/v1/van-1/event/dtc_set", {**big, "seq": i}, Lane.EVENT)])
    stats = spool.stats()
    assert stats["evicted_events"] == 30 - stats["depth"]
    assert stats["evicted_events"] > 0
    assert [e.message.payload["seq"] for e in spool.take(100)][-1] == 29


def test_entries_in_flight_are_never_evicted(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=65536)
    for i in range(40):
        spool.put([pos(i * 20, n_records=20)])
    inflight = spool.take(40)
    for i in range(40, 100):
        spool.put([pos(i * 20, n_records=20)])
    for e in inflight:
        spool.ack(e.id)  # still there to acknowledge: an eviction would have lost the PUBACK
    assert spool.stats()["inflight"] == 0


def test_stats_report_the_age_of_the_oldest_entry(tmp_path: Path) -> None:
    now = [1000.0]
    spool = Spool(tmp_path / "spool", SequenceCounter(tmp_path / "seq"), wall_clock=lambda: now[0])
    spool.put([event(1)])
    now[0] += 42.5
    spool.put([event(2)])
    assert spool.stats()["oldest_age_s"] == 42.5


def corrupt_garbage(db: Path) -> None:
    db.write_bytes(os.urandom(8192))


def corrupt_truncated(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 3 + 7])


def corrupt_not_a_database(db: Path) -> None:
    db.write_text("spool entries, one per line\n" * 200)


def corrupt_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    # Keep the 100-byte header valid, smash the page structure of every page after the first.
    for off in range(4096, len(data), 4096):
        data[off : off + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [corrupt_garbage, corrupt_truncated, corrupt_not_a_database, corrupt_pages]
)
def test_corrupt_file_is_quarantined_and_replaced(tmp_path: Path, damage: object) -> None:
    spool = open_spool(tmp_path)
    for i in range(50):
        spool.put([pos(i * 10, n_records=30)])
    spool.close()
    db = tmp_path / "spool" / DB_FILE
    # Fold the WAL into the main file so the damage hits the data, not a side file.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert callable(damage)
    damage(db)
    original = db.read_bytes()

    fresh = open_spool(tmp_path)

    kept = list((tmp_path / "spool").glob(f"{DB_FILE}.corrupt-*"))
    kept_main = [p for p in kept if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept_main) == 1 and kept_main[0].read_bytes() == original
    assert fresh.stats()["quarantined"] == 1
    assert fresh.depth() == 0
    fresh.put([event(999)])  # and the agent keeps going on the new file
    assert [e.message.payload["seq"] for e in fresh.take(5)] == [999]


def test_rows_that_are_not_messages_are_set_aside(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.put([event(1), event(2)])
    spool.close()
    with sqlite3.connect(tmp_path / "spool" / DB_FILE) as conn:
        conn.execute(
            "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (?, 0, 1)",
            (b'{"lane": "event", "topic": 7}',),
        )
        conn.execute(
            "INSERT INTO ack_queue_default (data, timestamp, status) VALUES (?, 0, 1)",
            (b"\x00\x01 not json",),
        )
    spool = open_spool(tmp_path)
    spool.put([event(3)])
    assert [e.message.payload["seq"] for e in spool.take(10)] == [1, 2, 3]
    assert spool.stats()["corrupt_rows"] == 2


WRITER = """
import sys
from pathlib import Path
from agent.encoder import Lane, Message
from agent.sequence import SequenceCounter
from agent.spool import Spool

d = Path(sys.argv[1])
seq = SequenceCounter(d / "seq")
spool = Spool(d / "spool", seq)
while True:
    s = seq.take()
    lane = Lane.EVENT if s % 7 == 0 else Lane.POSITION
    spool.put([Message("fleet/v1/van-1/x", {"seq": s, "pad": "p" * (s % 300)}, lane)])
    print(s, flush=True)
"""


@pytest.mark.parametrize("kill_after", [1, 37, 150])
def test_kill_9_mid_stream_loses_no_committed_entry(tmp_path: Path, kill_after: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    committed: list[int] = []
    deadline = time.monotonic() + 30
    while len(committed) < kill_after and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        committed.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert len(committed) >= kill_after, "the writer did not get going"

    with sqlite3.connect(tmp_path / "spool" / DB_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    spool = open_spool(tmp_path)
    assert spool.stats()["quarantined"] == 0
    found = [e.message.payload["seq"] for e in spool.take(100000)]
    # Everything acknowledged as committed is there; at most the one put in progress beyond.
    assert found[: len(committed)] == committed
    assert len(found) - len(committed) <= 1
    assert found == sorted(found)
    # The sequence counter never hands out a committed number again.
    assert SequenceCounter(tmp_path / "seq").next_value > found[-1]


def test_a_row_survives_as_compact_json(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.put([event(5)])
    spool.close()
    with sqlite3.connect(tmp_path / "spool" / DB_FILE) as conn:
        (data,) = conn.execute("SELECT data FROM ack_queue_default").fetchone()
    row = json.loads(data)
    assert row["lane"] == "event" and row["payload"]["seq"] == 5
    assert b", " not in data, "no padding on disk"


@pytest.mark.parametrize("encoding", ["json", "zlib"])
def test_thinning_keeps_every_nth_record_before_evicting_batches(
    tmp_path: Path, encoding: str
) -> None:
    from agent.contract import problems
    from agent.encoder import Encoder, Identity, batch_records
    from bench.bench_wire import drive_records

    seq = SequenceCounter(tmp_path / "seq")
    spool = Spool(tmp_path / "spool", seq, max_bytes=65536, thin_keep_every=4)
    enc = Encoder(Identity("van-1", "boot"), seq, None, position_encoding=encoding)  # type: ignore[arg-type]
    records = drive_records(8000 if encoding == "zlib" else 3000)
    for i in range(0, len(records), 100):
        spool.put([enc.position_batch(records[i : i + 100], historical=False)])
    stats = spool.stats()
    assert stats["bytes"] <= 65536
    assert stats["thinned_records"] > 0
    entries = spool.take(10000)
    delivered = [r["seq"] for e in entries for r in batch_records(e.message.payload)]
    thinned = [e.message.payload for e in entries if "thinned" in e.message.payload]
    assert thinned and all(p["thinned"] == 4 for p in thinned)
    for p in thinned:
        recs = batch_records(p)
        assert p["count"] == len(recs) < 100
        assert (recs[0]["seq"], recs[-1]["seq"]) == (p["seq"], p["seq_last"])
        assert problems("fleet/v1/van-1/pos", p) == []
    # Every record is either delivered, thinned away or in an evicted batch: all counted.
    lost = len(records) - len(delivered)
    assert lost == stats["thinned_records"] + stats["evicted_position_records"]
    assert delivered == sorted(delivered) and delivered[-1] == records[-1]["seq"]


def test_a_lost_sequence_file_never_reuses_a_seq_still_in_the_spool(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    spool.put([pos(500, n_records=10)])
    payload = dict(pos(500).payload, seq_last=509)
    spool.put([Message("fleet/v1/van-1/pos", payload, Lane.POSITION)])
    spool.close()
    (tmp_path / "seq").unlink(missing_ok=True)
    seq = SequenceCounter(tmp_path / "seq")
    Spool(tmp_path / "spool", seq)
    assert seq.next_value == 510


def test_a_file_damaged_while_running_is_quarantined_and_the_spool_goes_on(
    tmp_path: Path,
) -> None:
    spool = open_spool(tmp_path)
    for i in range(50):
        spool.put([pos(i * 10, n_records=30)])
    inflight = spool.take(3)
    db = tmp_path / "spool" / DB_FILE
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_pages(db)  # under the running spool's feet

    spool.put([event(1000)])  # finds the damage, sets the file aside, commits to a new one

    kept = [
        p for p in db.parent.glob(f"{DB_FILE}.corrupt-*") if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(kept) == 1
    stats = spool.stats()
    assert stats["quarantined"] == 1 and stats["stranded"] == 50
    entries = spool.take(10)
    assert [e.message.payload["seq"] for e in entries] == [1000]
    assert entries[0].id > max(e.id for e in inflight), "ids keep growing across the swap"
    spool.ack_many([e.id for e in inflight])  # late PUBACKs for the old file: harmless
    assert spool.depth() == 1
    spool.close()
    assert [e.message.payload["seq"] for e in open_spool(tmp_path).take(10)] == [1000]
