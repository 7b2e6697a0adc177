"""The latest alerts this control plane raised, for the dashboard's alerts panel.

A small SQLite file under data_dir (bounded to ``keep`` rows), so the panel survives a
restart without a table in the operator database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


class RecentAlerts:
    def __init__(self, path: Path, keep: int = 500) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS recent (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " ts REAL NOT NULL, farm_id TEXT, body TEXT NOT NULL)"
        )

    def add(self, alert: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO recent (ts, farm_id, body) VALUES (?, ?, ?)",
                (alert["ts"], alert.get("farm_id"), json.dumps(alert)),
            )
            self._db.execute(
                "DELETE FROM recent WHERE seq <= (SELECT MAX(seq) FROM recent) - ?", (self.keep,)
            )

    def latest(self, limit: int = 50, farm_id: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT body FROM recent", [] if farm_id is None else [farm_id]
        if farm_id is not None:
            q += " WHERE farm_id = ?"
        with self._lock:
            rows = self._db.execute(q + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [json.loads(b) for (b,) in rows]

    def erase_farm(self, farm_id: str) -> int:
        with self._lock:
            cur = self._db.execute("DELETE FROM recent WHERE farm_id = ?", (farm_id,))
        return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            self._db.close()
