"""Spool: the on-disk queue of outgoing messages, kept until the broker acknowledges each one."""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import sqlite3
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.encoder import ZLIB_COLUMNS, Lane, Message, batch_records, encode_columns
from agent.errors import SpoolError
from agent.sequence import SequenceCounter

# persist-queue's package __init__ imports its asyncio-based queues, and with them asyncio
# (about 8 MB of RSS on a daemon whose target is 40 MB), though we use only its SQLite ack
# queue. A None entry in sys.modules makes that import fail, which persist-queue's own
# try/except already handles (as when aiofiles is missing): the async queues are skipped.
for _name in ("persistqueue.async_queue", "persistqueue.async_sqlqueue"):
    sys.modules.setdefault(_name, None)  # type: ignore[arg-type]

import persistqueue  # noqa: E402

logger = logging.getLogger(__name__)

DB_FILE = "data.db"
# persist-queue names its table "<class table>_<name>"; we read it directly only to rebuild the
# in-memory index at start (lane and size of every live row) without deserializing every payload.
_TABLE = "ack_queue_default"
_STATUS_ACKED = 5
_STATUS_ACK_FAILED = 9
# SQLite's default limit on host parameters is 999 in old builds; stay well below it.
_MAX_IDS_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: int
    message: Message


@dataclass(slots=True)
class _Row:
    lane: Lane
    nbytes: int
    committed_at: float
    records: int = 1  # position records in a pos batch
    thinned: bool = False


class _RowSerializer:
    """persist-queue serializer: the spool hands it compact JSON bytes it already encoded.

    Encoding in the spool (not in persist-queue) lets us know each entry's size for the byte
    bound without serializing twice; persist-queue's own JSON serializer also pads with spaces.
    """

    @staticmethod
    def dumps(value: Any) -> bytes:
        if isinstance(value, bytes):
            return value
        return json.dumps(value, separators=(",", ":")).encode()

    @staticmethod
    def loads(data: bytes | str) -> Any:
        return json.loads(data)


def encode_row(message: Message) -> bytes:
    row: dict[str, Any] = {"lane": str(message.lane), "topic": message.topic}
    if message.retain:
        row["retain"] = True
    row["payload"] = message.payload
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


class Spool:
    """A persist-queue SQLite ack queue of messages, bounded in bytes.

    One entry is one MQTT message. ``put`` persists the sequence counter before the commit, so
    a restart never reuses a committed ``seq``; every ``put`` is its own SQLite transaction
    (WAL, synchronous FULL), so ``kill -9`` or a power cut never loses a committed entry.
    Entries taken by the publisher are ``unack`` until their PUBACK; after a crash
    persist-queue's auto-resume makes them ready again and they are re-sent (at-least-once;
    backends deduplicate by ``(device_id, seq)``).

    When the payload bytes would exceed ``max_bytes`` the oldest position batches not in flight
    are evicted first, other entries (events) only when no position batch is left; every
    eviction is counted by lane. With ``thin_keep_every = N`` (N >= 2) the oldest batches are
    first thinned to every Nth record (first and last kept, payload marked ``thinned: N``), and
    whole batches go only once every batch is thinned. A spool file that SQLite cannot read at
    start is renamed to ``data.db.corrupt-<unix time>`` (kept for inspection) and replaced.

    Writes go through persist-queue. Reads and acknowledgements do not: its ``get`` and
    ``ack`` commit one transaction (one fsync) per row, and its ``get`` scans past every acked
    row still in the table. The publisher takes and acknowledges up to 100 entries at a time,
    so the spool keeps an in-memory index of live rows, reads them by id, and deletes
    acknowledged rows in one transaction per batch through its own connection on the same
    file (same table, same status codes). Taking an entry therefore costs the same with no
    history or with a million delivered rows, and in-flight state lives only in memory: after
    a crash every unacknowledged row is simply ready again.
    """

    def __init__(
        self,
        directory: Path,
        seq: SequenceCounter,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        thin_keep_every: int = 0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.thin_keep_every = thin_keep_every
        self._seq = seq
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._positions: OrderedDict[int, _Row] = OrderedDict()
        self._others: OrderedDict[int, _Row] = OrderedDict()
        self._inflight: set[int] = set()
        self._bytes = 0
        self._last_id = 0
        self.committed = 0
        self.acked = 0
        self.evicted_positions = 0
        self.evicted_position_records = 0
        self.evicted_events = 0
        self.thinned_records = 0
        self.quarantined = 0
        self.corrupt_rows = 0
        self.stranded = 0  # entries left in a file quarantined while running
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool directory {directory}: {exc}") from exc
        reason = _unreadable(self.directory / DB_FILE)
        if reason is not None:
            self._quarantine(reason)
        try:
            self._q = self._open()
        except sqlite3.DatabaseError as exc:
            _raise_if_inaccessible(self.directory / DB_FILE, exc)
            # quick_check passed but persist-queue still cannot use it (e.g. a foreign table
            # layout): the same treatment, once.
            self._quarantine(str(exc))
            self._q = self._open()
        self._db = sqlite3.connect(
            str(self.directory / DB_FILE), check_same_thread=False, timeout=10.0
        )
        self._load_index()

    # -- opening -------------------------------------------------------------------------------

    def _open(self) -> Any:
        try:
            return persistqueue.SQLiteAckQueue(
                str(self.directory),
                multithreading=True,
                serializer=_RowSerializer,
                auto_resume=True,
            )
        except sqlite3.DatabaseError:
            raise
        except Exception as exc:  # OS errors surface in many types here
            raise SpoolError(f"cannot open the spool in {self.directory}: {exc}") from exc

    def _quarantine(self, reason: str) -> None:
        db = self.directory / DB_FILE
        stamp = int(self._wall())
        target = db.with_name(f"{DB_FILE}.corrupt-{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = db.with_name(f"{DB_FILE}.corrupt-{stamp}-{n}")
        try:
            db.rename(target)
            for suffix in ("-wal", "-shm"):
                side = db.with_name(DB_FILE + suffix)
                if side.exists():
                    side.rename(target.with_name(target.name + suffix))
        except OSError as exc:
            raise SpoolError(f"cannot quarantine the corrupt spool {db}: {exc}") from exc
        self.quarantined += 1
        logger.error(
            "spool %s is corrupt (%s): moved to %s, starting an empty spool", db, reason, target
        )

    def _load_index(self) -> None:
        """Rebuild lane, size and age of every unacknowledged row (one query at start)."""
        # Rows that are not JSON get a NULL text, hence a NULL lane: set aside below.
        sql = (
            "SELECT _id, n, ts, json_extract(t, '$.lane'), json_extract(t, '$.payload.count'),"
            " json_extract(t, '$.payload.thinned'),"
            " max(coalesce(json_extract(t, '$.payload.seq_last'), 0),"
            "     coalesce(json_extract(t, '$.payload.seq'), 0)) FROM"
            " (SELECT _id, length(data) AS n, timestamp AS ts,"
            "  CASE WHEN json_valid(CAST(data AS TEXT)) THEN CAST(data AS TEXT) END AS t"
            f"  FROM {_TABLE} WHERE status < {_STATUS_ACKED})"
            " ORDER BY _id"
        )
        bad: list[int] = []
        top_seq = 0
        for row_id, nbytes, ts, lane, count, thinned, seq in self._db.execute(sql):
            try:
                row = _Row(Lane(lane), int(nbytes), float(ts), int(count or 1), thinned is not None)
            except (ValueError, TypeError):
                bad.append(int(row_id))
                continue
            self._track(int(row_id), row)
            if isinstance(seq, int):
                top_seq = max(top_seq, seq)
        # The counter file is the source of truth, but if it was lost or restored from an old
        # image while the spool survived, never reuse a seq that is still waiting here.
        if top_seq >= self._seq.next_value:
            logger.error(
                "sequence counter (%d) is behind the spool (seq %d): continuing above it",
                self._seq.next_value,
                top_seq,
            )
            self._seq.bump_to(top_seq)
        last = self._db.execute(f"SELECT max(_id) FROM {_TABLE}").fetchone()
        self._last_id = int(last[0] or 0) if last else 0
        self._set_status(bad, _STATUS_ACK_FAILED)
        self.corrupt_rows += len(bad)
        if bad:
            logger.error("spool: %d unreadable rows set aside (status ack_failed)", len(bad))
        if self.depth_unlocked():
            logger.info(
                "spool: %d entries (%d bytes) waiting from before the start",
                self.depth_unlocked(),
                self._bytes,
            )

    def _track(self, row_id: int, row: _Row) -> None:
        (self._positions if row.lane is Lane.POSITION else self._others)[row_id] = row
        self._bytes += row.nbytes

    def _untrack(self, row_id: int) -> _Row | None:
        row = self._positions.pop(row_id, None) or self._others.pop(row_id, None)
        if row is not None:
            self._bytes -= row.nbytes
        self._inflight.discard(row_id)
        return row

    # -- the pipeline side ---------------------------------------------------------------------

    def put(self, messages: list[Message]) -> None:
        """Commit messages (the ``live`` lane is never spooled); evict old ones if full."""
        durable = [m for m in messages if m.lane is not Lane.LIVE]
        if not durable:
            return
        with self._lock:
            self._seq.persist()
            for m in durable:
                data = encode_row(m)
                self._make_room(len(data))
                try:
                    row_id = int(self._q.put(data))
                except sqlite3.Error as exc:
                    if not _corrupt(exc):
                        raise SpoolError(f"cannot write to the spool: {exc}") from exc
                    self._recover(exc)
                    try:
                        row_id = int(self._q.put(data))
                    except sqlite3.Error as again:
                        raise SpoolError(f"cannot write to the spool: {again}") from again
                records = m.payload.get("count", 1) if m.lane is Lane.POSITION else 1
                self._track(row_id, _Row(m.lane, len(data), self._wall(), int(records)))
                self._last_id = max(self._last_id, row_id)
                self.committed += 1

    def _make_room(self, nbytes: int) -> None:
        while self._bytes + nbytes > self.max_bytes:
            if self.thin_keep_every >= 2 and self._thin_oldest():
                continue
            victim = _oldest_ready(self._positions, self._inflight)
            lane_positions = victim is not None
            if victim is None:
                victim = _oldest_ready(self._others, self._inflight)
            if victim is None:
                return  # everything left is in flight; it goes once acknowledged
            self._delete([victim])
            row = self._untrack(victim)
            if lane_positions:
                self.evicted_positions += 1
                self.evicted_position_records += row.records if row else 0
            else:
                self.evicted_events += 1
            if self.evicted_positions + self.evicted_events in (1, 10, 100, 1000) or (
                (self.evicted_positions + self.evicted_events) % 10000 == 0
            ):
                logger.warning(
                    "spool full (%d bytes): evicted %d position batches and %d other entries",
                    self.max_bytes,
                    self.evicted_positions,
                    self.evicted_events,
                )

    def _thin_oldest(self) -> bool:
        """Thin the oldest unthinned position batch not in flight; False if there is none."""
        n = self.thin_keep_every
        for row_id, row in self._positions.items():
            if row.thinned or row_id in self._inflight:
                continue
            row.thinned = True
            try:
                (data,) = self._db.execute(
                    f"SELECT data FROM {_TABLE} WHERE _id = ?", (row_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                if not _corrupt(exc):
                    raise SpoolError(f"cannot read the spool: {exc}") from exc
                self._recover(exc)
                return True  # the budget is free again
            try:
                message = _message(json.loads(data))
                records = batch_records(message.payload)
            except (KeyError, ValueError, TypeError):
                continue  # left whole; eviction deals with it
            if len(records) <= 2:
                continue
            kept = records[::n]
            if kept[-1] is not records[-1]:
                kept.append(records[-1])
            payload = dict(message.payload)
            if payload.get("encoding") == ZLIB_COLUMNS:
                payload["data"] = encode_columns(kept)
            else:
                payload["records"] = kept
            payload["count"] = len(kept)
            payload["thinned"] = n
            new = encode_row(Message(message.topic, payload, message.lane, message.retain))
            try:
                with self._db:
                    self._db.execute(f"UPDATE {_TABLE} SET data = ? WHERE _id = ?", (new, row_id))
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot update the spool: {exc}") from exc
            self._bytes += len(new) - row.nbytes
            row.nbytes = len(new)
            row.records = len(kept)
            self.thinned_records += len(records) - len(kept)
            return True
        return False

    # -- the publisher side --------------------------------------------------------------------

    def take(self, limit: int) -> list[SpoolEntry]:
        """Up to ``limit`` entries not in flight, oldest first, now marked in flight."""
        out: list[SpoolEntry] = []
        with self._lock:
            ids = list(self._ready(limit))
            if not ids:
                return out
            rows: dict[int, bytes] = {}
            try:
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT _id, data FROM {_TABLE} WHERE _id IN ({marks})"
                    rows.update((int(i), d) for i, d in self._db.execute(sql, chunk))
            except sqlite3.Error as exc:
                if not _corrupt(exc):
                    raise SpoolError(f"cannot read the spool: {exc}") from exc
                self._recover(exc)
                return out
            bad: list[int] = []
            for row_id in ids:
                try:
                    message = _message(json.loads(rows[row_id]))
                except (KeyError, ValueError, TypeError):
                    bad.append(row_id)
                    continue
                self._inflight.add(row_id)
                out.append(SpoolEntry(row_id, message))
            if bad:
                self._set_status(bad, _STATUS_ACK_FAILED)
                for row_id in bad:
                    self._untrack(row_id)
                self.corrupt_rows += len(bad)
                logger.error("spool: %d rows are not messages; set aside", len(bad))
        return out

    def _ready(self, limit: int) -> list[int]:
        out: list[int] = []
        for row_id in heapq.merge(self._positions, self._others):
            if row_id not in self._inflight:
                out.append(row_id)
                if len(out) >= limit:
                    break
        return out

    def ack(self, entry_id: int) -> None:
        self.ack_many([entry_id])

    def ack_many(self, entry_ids: list[int]) -> None:
        """The broker has these: delete them (one transaction for the whole batch)."""
        if not entry_ids:
            return
        with self._lock:
            self._delete(entry_ids)
            for row_id in entry_ids:
                if self._untrack(row_id) is not None:
                    self.acked += 1

    def nack(self, entry_id: int) -> None:
        """Not delivered after all (connection lost): ready to be taken again."""
        with self._lock:
            self._inflight.discard(entry_id)

    def _delete(self, ids: list[int]) -> None:
        try:
            with self._db:
                for chunk in _chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(f"DELETE FROM {_TABLE} WHERE _id IN ({marks})", chunk)
        except sqlite3.Error as exc:
            if not _corrupt(exc):
                raise SpoolError(f"cannot update the spool: {exc}") from exc
            self._recover(exc)

    def _recover(self, exc: sqlite3.Error) -> None:
        """The file went bad while running: set it aside, go on with a fresh one."""
        last_id = self._last_id
        for conn in (self._q, self._db):
            with contextlib.suppress(Exception):
                conn.close()
        lost = self.depth_unlocked()
        self._quarantine(f"found damaged while running: {exc}; {lost} entries stay in it")
        self._positions.clear()
        self._others.clear()
        self._inflight.clear()
        self._bytes = 0
        self.stranded += lost
        self._q = self._open()
        self._db = sqlite3.connect(
            str(self.directory / DB_FILE), check_same_thread=False, timeout=10.0
        )
        # Ids keep growing across the swap, so a late PUBACK for an entry of the old file can
        # never delete a new entry that happens to get the same id.
        with self._db:
            self._db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (_TABLE, last_id)
            )

    def _set_status(self, ids: list[int], status: int) -> None:
        if not ids:
            return
        with self._db:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                self._db.execute(
                    f"UPDATE {_TABLE} SET status = ? WHERE _id IN ({marks})", [status, *chunk]
                )

    # -- observation ---------------------------------------------------------------------------

    @property
    def last_id(self) -> int:
        """The id of the newest committed entry (ids only grow)."""
        return self._last_id

    def depth(self) -> int:
        with self._lock:
            return self.depth_unlocked()

    def depth_unlocked(self) -> int:
        return len(self._positions) + len(self._others)

    def stats(self) -> dict[str, float]:
        """Counters for health: depth, bytes, age of the oldest entry, evictions, quarantines."""
        with self._lock:
            firsts = [*self._first(self._positions), *self._first(self._others)]
            oldest = [r.committed_at for r in firsts]
            age = max(0.0, self._wall() - min(oldest)) if oldest else 0.0
            return {
                "depth": float(self.depth_unlocked()),
                "bytes": float(self._bytes),
                "max_bytes": float(self.max_bytes),
                "oldest_age_s": round(age, 3),
                "evicted_positions": float(self.evicted_positions),
                "evicted_position_records": float(self.evicted_position_records),
                "thinned_records": float(self.thinned_records),
                "evicted_events": float(self.evicted_events),
                "quarantined": float(self.quarantined),
                "corrupt_rows": float(self.corrupt_rows),
                "stranded": float(self.stranded),
                "committed": float(self.committed),
                "acked": float(self.acked),
                "inflight": float(len(self._inflight)),
            }

    @staticmethod
    def _first(rows: OrderedDict[int, _Row]) -> list[_Row]:
        for row in rows.values():
            return [row]
        return []

    def table_rows(self) -> int:
        """Rows physically in the table (set-aside rows included)."""
        with self._lock:
            return int(self._db.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            try:
                # Rows acknowledged through persist-queue by an older version of the spool.
                self._q.clear_acked_data(keep_latest=0, max_delete=0)
            finally:
                self._q.close()
                self._db.close()


def _corrupt(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file is damaged (not locked, full or unreadable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    return "malformed" in str(exc) or "not a database" in str(exc)


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + _MAX_IDS_PER_STATEMENT] for i in range(0, len(ids), _MAX_IDS_PER_STATEMENT)]


def _oldest_ready(rows: OrderedDict[int, _Row], inflight: set[int]) -> int | None:
    for row_id in rows:
        if row_id not in inflight:
            return row_id
    return None


# SQLite result codes (low byte) that say the file cannot be reached or written, not that it
# is damaged: read-only file or directory, permissions, locks, I/O errors, a full disk. Moving
# such a file aside as "corrupt" would strand its undelivered backlog, so they are errors.
_INACCESSIBLE_CODES = frozenset({3, 5, 6, 8, 10, 13, 14})


def _raise_if_inaccessible(db: Path, exc: sqlite3.DatabaseError) -> None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _INACCESSIBLE_CODES:
        raise SpoolError(
            f"cannot open the spool {db}: {exc} (check the permissions of the file and its"
            " directory, and that the file system is writable)"
        ) from exc


def _unreadable(db: Path) -> str | None:
    """Why SQLite cannot use ``db``, or None when it can (or it does not exist yet)."""
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(str(db))) as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        _raise_if_inaccessible(db, exc)
        return str(exc)
    if rows != [("ok",)]:
        return "; ".join(str(r[0]) for r in rows[:3])
    if tables and _TABLE not in tables:
        return f"no {_TABLE} table (tables: {', '.join(sorted(tables))[:80]})"
    return None


def _message(data: dict[str, Any]) -> Message:
    payload = data["payload"]
    if not isinstance(payload, dict):
        raise TypeError("payload is not an object")
    return Message(
        topic=str(data["topic"]),
        payload=payload,
        lane=Lane(data["lane"]),
        retain=bool(data.get("retain", False)),
    )
