"""The open drift windows, checkpointed to SQLite so a power cut loses at most a minute.

Every ``drift.checkpoint_s`` (60 s) the drift reporter writes each open window, in the
window format the outbox carries (mergeable: histograms, sums, min/max, reservoir), here,
replacing the previous checkpoint in one transaction. At start-up the windows found here
(the agent was killed, or the power went) are queued into the outbox as closed partial
windows, under their own window ids, and the checkpoint is cleared. A graceful stop
queues the running windows itself and clears it too.

Plain ``sqlite3`` (one small table, a few writes a minute), like the outbox and the feature
cache: sqlite-utils would add a dependency for three statements. All calls block; the reporter makes them off the loop.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.telemetry.drift_stats import encode_window


class DriftCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a written checkpoint survives power loss
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS open_windows ("
            "id TEXT PRIMARY KEY, model TEXT, version TEXT, saved_at REAL, doc BLOB)"
        )
        self.saves = 0

    def save(self, windows: Sequence[Mapping[str, Any]]) -> None:
        """Replace the checkpoint with these open windows (none: clear it)."""
        now = time.time()
        rows = [
            (str(w["id"]), w["model"], str(w["version"]), now, encode_window(w)) for w in windows
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM open_windows")
                self._db.executemany("INSERT INTO open_windows VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.saves += 1

    def load(self) -> list[dict[str, Any]]:
        """The windows of the last checkpoint (the checkpoint stays until ``save``)."""
        with self._lock:
            rows = self._db.execute("SELECT doc FROM open_windows ORDER BY saved_at, id").fetchall()
        out: list[dict[str, Any]] = []
        for (doc,) in rows:
            try:
                out.append(json.loads(doc))
            except ValueError:  # a torn row cannot happen under SQLite; skip rather than crash
                continue
        return out

    def clear(self) -> None:
        self.save([])

    def close(self) -> None:
        with self._lock:
            self._db.close()
