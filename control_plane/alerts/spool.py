"""Alerts kept on disk until RabbitMQ confirmed them (SQLite, WAL, synchronous=FULL).

A bounded FIFO: when it holds ``max_items``, the oldest alert is dropped (logged) so an
outage of days cannot fill the disk. Thread-safe; one connection guarded by a lock (the
publisher thread and the callers share it, and each call is a short statement).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class AlertSpool:
    def __init__(self, path: Path, max_items: int = 10_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_items = max_items
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " routing_key TEXT NOT NULL, body BLOB NOT NULL)"
        )

    def put(self, routing_key: str, body: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO alerts (routing_key, body) VALUES (?, ?)", (routing_key, body)
            )
            (n,) = self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()
            if n > self.max_items:
                self._db.execute(
                    "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts ORDER BY seq LIMIT ?)",
                    (n - self.max_items,),
                )
                log.warning("alert spool over %d alerts; dropped the oldest", self.max_items)

    def peek(self, limit: int = 100) -> list[tuple[int, str, bytes]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, routing_key, body FROM alerts ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(int(s), str(k), bytes(b)) for s, k, b in rows]

    def delete(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self._lock:
            self._db.executemany("DELETE FROM alerts WHERE seq = ?", [(s,) for s in seqs])

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()
