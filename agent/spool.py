"""Spool: the on-disk queue of outgoing messages, kept until the broker acknowledges each one."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import persistqueue
import persistqueue.serializers.json as json_serializer

from agent.encoder import Lane, Message
from agent.errors import SpoolError
from agent.sequence import SequenceCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    id: int
    message: Message


class Spool:
    """A persist-queue SQLite ack queue of messages (JSON serializer, never pickle on disk).

    One entry is one MQTT message. ``put`` persists the sequence counter before the commit, so
    a restart never reuses a committed ``seq``. Entries taken by the publisher are ``unack``
    until their PUBACK; after a crash persist-queue's auto-resume makes them ready again, so
    they are re-sent (at-least-once; backends deduplicate by ``(device_id, seq)``).
    """

    def __init__(self, directory: Path, seq: SequenceCounter) -> None:
        self.directory = directory
        self._seq = seq
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._q = persistqueue.SQLiteAckQueue(
                str(directory),
                multithreading=True,
                serializer=json_serializer,
                auto_resume=True,
            )
        except Exception as exc:  # sqlite3 and OS errors surface in many types here
            raise SpoolError(f"cannot open the spool in {directory}: {exc}") from exc
        self._lock = threading.Lock()
        self.committed = 0
        self.acked = 0

    def put(self, messages: list[Message]) -> None:
        """Commit messages (the ``live`` lane is never spooled)."""
        durable = [m for m in messages if m.lane is not Lane.LIVE]
        if not durable:
            return
        with self._lock:
            self._seq.persist()
            for m in durable:
                row: dict[str, Any] = {"topic": m.topic, "payload": m.payload, "lane": str(m.lane)}
                if m.retain:
                    row["retain"] = True
                self._q.put(row)
                self.committed += 1

    def take(self, limit: int) -> list[SpoolEntry]:
        """Up to ``limit`` ready entries, oldest first, marked in flight."""
        out: list[SpoolEntry] = []
        with self._lock:
            for _ in range(limit):
                raw = self._q.get(block=False, raw=True) if self._q.qsize() else None
                if raw is None:
                    break
                out.append(SpoolEntry(int(raw["pqid"]), _message(raw["data"])))
        return out

    def ack(self, entry_id: int) -> None:
        with self._lock:
            self._q.ack(id=entry_id)
            self.acked += 1
            # Acked rows are deleted in small batches so the table (and every get) stays small.
            if self.acked % 64 == 0:
                self._q.clear_acked_data(keep_latest=0, max_delete=10000)

    def nack(self, entry_id: int) -> None:
        with self._lock:
            self._q.nack(id=entry_id)

    def depth(self) -> int:
        with self._lock:
            return int(self._q.qsize()) + int(self._q.unack_count())

    def close(self) -> None:
        with self._lock:
            self._q.clear_acked_data(keep_latest=0, max_delete=100000)


def _message(data: dict[str, Any]) -> Message:
    return Message(
        topic=str(data["topic"]),
        payload=data["payload"],
        lane=Lane(data["lane"]),
        retain=bool(data.get("retain", False)),
    )
