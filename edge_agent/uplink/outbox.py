"""A durable outbox: what the gateway must tell the cloud survives outages of any length.

Items go into SQLite (WAL, synchronous=FULL) before anything is sent. A publisher task
sends them in insertion order with QoS 1 and deletes an item only when the control plane
acknowledges its key on ``farmiq/v1/gw/{id}/down/ack`` (payload ``{"keys": [...]}``) —
never on a broker PUBACK: Mosquitto can PUBACK and still drop a message for a slow
subscriber (see NOTES.md). Unacknowledged items are re-sent after ``ack_timeout_s``; the
control plane stores by key, so redelivery is idempotent.

A disk budget bounds the queue. Over budget, the oldest drift windows of the same model,
version and binning are merged (histograms and counts summed, reservoir kept bounded)
instead of dropped. Only items never handed to the broker are merged: a window that may
already be stored upstream keeps its key, so nothing is ever counted twice. An item that
cannot be merged and does not fit raises OutboxFull so the caller decides.

Every method that touches SQLite is blocking (a commit at synchronous=FULL is an fsync,
tens of milliseconds on an SD card): asyncio callers use the ``a*`` coroutines or
``asyncio.to_thread``, and ``run`` does its own database work in worker threads. One lock
serialises the connection, so producers on any thread and the publisher never interleave
transactions.

The outbox knows nothing of MQTT clients: it takes ``publish(topic, payload, qos)``, an
awaitable that raises when it cannot hand the message over, and optionally
``is_connected()`` so nothing is attempted while the link is down. Nor of drift windows:
it takes ``merge(payload_a, payload_b) -> (key, payload)`` for two items of the same
``merge_group`` (the drift reporter passes ``drift_stats.merge_encoded``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import orjson

from edge_agent.uplink.backoff import Backoff

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, int], Awaitable[None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    merge_group TEXT,
    created REAL NOT NULL,
    handed INTEGER NOT NULL DEFAULT 0,
    last_sent REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_group ON outbox (merge_group, seq);
"""


# Two items of one merge group -> the (key, payload) of the one item replacing both.
Merge = Callable[[bytes, bytes], tuple[str, bytes]]


class OutboxFull(RuntimeError):
    """The item does not fit in the disk budget and nothing can be merged to make room."""


class Outbox:
    def __init__(
        self,
        path: str | Path,
        publish: Publish | None = None,
        *,
        disk_budget_bytes: int = 64 * 1024 * 1024,
        ack_timeout_s: float = 30.0,
        max_in_flight: int = 32,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        is_connected: Callable[[], bool] | None = None,
        merge: Merge | None = None,
    ) -> None:
        self.path = Path(path)
        self.merge = merge
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.publish = publish
        self.disk_budget_bytes = disk_budget_bytes
        self.ack_timeout_s = ack_timeout_s
        self.max_in_flight = max_in_flight
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.is_connected = is_connected
        self.merges = 0
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged put survives power loss
        self._db.executescript(_SCHEMA)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.RLock()  # one transaction at a time on the shared connection
        # Items handed over in an earlier run may or may not have arrived: send them again.
        self._db.execute("UPDATE outbox SET last_sent = NULL")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _notify(self) -> None:
        """Wake the publisher; safe from any thread."""
        if self._wake is None or self._loop is None or self._loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- producers ------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, key: str, *, merge_group: str | None = None) -> bool:
        """Queue ``payload`` durably; False when ``key`` is already queued (idempotent)."""
        if not key:
            raise ValueError("outbox items need a non-empty key")
        size = len(payload)
        if size > self.disk_budget_bytes:
            raise OutboxFull(f"item {key!r} ({size} B) exceeds the disk budget")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (key, topic, payload, merge_group, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (key, topic, payload, merge_group, time.time()),
                )
                inserted = cur.rowcount == 1
                if inserted:
                    self._enforce_budget(protect_key=None if merge_group else key)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if inserted:
            self._notify()
        return inserted

    async def aput(
        self, topic: str, payload: bytes, key: str, *, merge_group: str | None = None
    ) -> bool:
        """``put`` off the event loop."""
        return await asyncio.to_thread(self.put, topic, payload, key, merge_group=merge_group)

    def size_bytes(self) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox"
            ).fetchone()
        return int(row[0])

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def items(self) -> list[tuple[str, str, bytes]]:
        """(key, topic, payload) in send order; for inspection and tests."""
        with self._lock:
            rows = self._db.execute("SELECT key, topic, payload FROM outbox ORDER BY seq")
            return [(k, t, bytes(p)) for k, t, p in rows]

    def _enforce_budget(self, protect_key: str | None) -> None:
        # The budget counts payload bytes; SQLite's file overhead is proportional to it.
        while self.size_bytes() > self.disk_budget_bytes:
            if not self._merge_oldest_pair():
                if protect_key is not None:
                    raise OutboxFull(
                        f"outbox over its {self.disk_budget_bytes} B budget, nothing left to merge"
                    )
                # A mergeable item always fits after merging down to one window per group
                # being kept; beyond that the budget is too small for the model count.
                log.warning("outbox over budget with nothing mergeable (%d B)", self.size_bytes())
                return

    def _merge_oldest_pair(self) -> bool:
        if self.merge is None:
            return False
        row = self._db.execute(
            "SELECT merge_group FROM outbox WHERE merge_group IS NOT NULL AND handed = 0 "
            "GROUP BY merge_group HAVING COUNT(*) >= 2 ORDER BY MIN(seq) LIMIT 1"
        ).fetchone()
        if row is None:
            return False
        pair = self._db.execute(
            "SELECT seq, payload FROM outbox WHERE merge_group = ? AND handed = 0 "
            "ORDER BY seq LIMIT 2",
            (row[0],),
        ).fetchall()
        (seq_a, pa), (seq_b, pb) = pair
        key, payload = self.merge(pa, pb)
        # The merged item keeps the older position in the send order.
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq_b,))
        self._db.execute(
            "UPDATE outbox SET key = ?, payload = ? WHERE seq = ?", (key, payload, seq_a)
        )
        self.merges += 1
        return True

    # -- acknowledgements -------------------------------------------------------------------
    def ack(self, keys: Iterable[str]) -> int:
        """Delete the items the control plane stored; returns how many were removed."""
        keys = [k for k in keys if isinstance(k, str)]
        if not keys:
            return 0
        removed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    cur = self._db.execute(
                        f"DELETE FROM outbox WHERE key IN ({','.join('?' * len(chunk))})", chunk
                    )
                    removed += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if removed:
            self._notify()  # room in the in-flight window
        return removed

    def handle_ack_message(self, payload: bytes) -> int:
        """Handler for ``down/ack``: ``{"keys": [...]}``. Bad payloads are logged, not raised."""
        try:
            # orjson: bounded nesting depth (json.loads raises RecursionError on "[[[[...")
            doc = orjson.loads(payload)
            keys = doc["keys"]
            if not isinstance(keys, list):
                raise TypeError("keys must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed outbox ack: %s", exc)
            return 0
        return self.ack(keys)

    async def ahandle_ack_message(self, payload: bytes) -> int:
        """``handle_ack_message`` off the event loop."""
        return await asyncio.to_thread(self.handle_ack_message, payload)

    # -- publisher ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Publish forever (cancel to stop). Waits on puts and acks; never busy-loops."""
        if self.publish is None:
            raise RuntimeError("Outbox.run needs a publish callable")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        backoff = Backoff(self.retry_min_s, self.retry_max_s)
        while True:
            self._wake.clear()
            try:
                _, next_due = await self._send_due()
                backoff.reset()
            except Exception as exc:  # link down, broker gone: keep everything, retry later
                next_due = backoff.next()
                log.info("outbox publish failed (%s); retrying in %.1fs", exc, next_due)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=next_due)
            except TimeoutError:
                pass

    def _due(self, stale: float) -> list[tuple[int, str, bytes]]:
        with self._lock:
            in_flight = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE last_sent IS NOT NULL AND last_sent > ?",
                (stale,),
            ).fetchone()[0]
            room = self.max_in_flight - int(in_flight)
            if room <= 0:
                return []
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE last_sent IS NULL OR last_sent <= ? "
                "ORDER BY seq LIMIT ?",
                (stale, room),
            ).fetchall()
        return [(int(seq), str(topic), bytes(payload)) for seq, topic, payload in rows]

    def _mark(
        self, sent: list[tuple[int, float]], refused: int | None, unknown: int | None
    ) -> float | None:
        """Record one send round in one transaction (one fsync, not one per item); returns
        the oldest ``last_sent`` still waiting for an acknowledgement."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE outbox SET handed = 1, attempts = attempts + 1, last_sent = ? "
                    "WHERE seq = ?",
                    [(ts, seq) for seq, ts in sent],
                )
                if refused is not None:
                    # Refused before reaching the broker: still ours alone, still mergeable.
                    self._db.execute(
                        "UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (refused,)
                    )
                if unknown is not None:
                    # Unknown fate (timeout, cancel): the broker may hold it, so never merge it.
                    self._db.execute(
                        "UPDATE outbox SET handed = 1, attempts = attempts + 1 WHERE seq = ?",
                        (unknown,),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0:
                return -1.0
            oldest = self._db.execute(
                "SELECT MIN(last_sent) FROM outbox WHERE last_sent IS NOT NULL"
            ).fetchone()[0]
        return None if oldest is None else float(oldest)

    async def _send_due(self) -> tuple[int, float]:
        """Send what is due; returns (count sent, seconds until something may be due)."""
        assert self.publish is not None
        if self.is_connected is not None and not self.is_connected():
            return 0, self.retry_min_s
        stale = time.time() - self.ack_timeout_s
        rows = await asyncio.to_thread(self._due, stale)
        sent: list[tuple[int, float]] = []
        refused = unknown = None
        try:
            for seq, topic, payload in rows:
                try:
                    await self.publish(topic, payload, 1)
                except ConnectionError:
                    refused = seq
                    raise
                except BaseException:
                    unknown = seq
                    raise
                sent.append((seq, time.time()))
        finally:
            # shielded: a cancel (agent stop) must not lose the record of what was handed over
            mark = asyncio.ensure_future(asyncio.to_thread(self._mark, sent, refused, unknown))
            oldest = await asyncio.shield(mark)
        if oldest is not None and oldest < 0:
            return len(sent), 3600.0  # nothing queued: sleep until a put wakes us
        if oldest is None:
            return len(sent), self.retry_min_s
        return len(sent), max(0.05, oldest + self.ack_timeout_s - time.time())
