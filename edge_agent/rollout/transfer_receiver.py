"""Gateway side of chunked bundle transfers over MQTT (protocol: docs/rollout.md).

The gateway pulls: it asks for a window of chunks on ``up/transfer`` and the control plane
answers each with one ``down/chunk``. Every chunk is checked against its sha256 from the
desired state before it is kept; a missing or bad chunk is simply asked for again after a
timeout. The request is the acknowledgement: nothing relies on the broker's PUBACK (a
broker may drop QoS 1 messages for a slow subscriber and still PUBACK the sender).

With a state directory, good chunks are written to ``transfers/<bundle_id>/data`` and
listed in ``have.json`` only after an fsync, so a disconnect or a reboot resumes from the
chunks already held (each is re-hashed on resume: a torn write is fetched again). A byte
budget per period caps what the link may download (cellular farms pay per MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from farmiq.rollout_wire import DesiredModel, WireError, decode_chunk, transfer_request

log = logging.getLogger(__name__)

Publish = Callable[[bytes], Awaitable[None]]  # payload for up/transfer
CHUNK_OVERHEAD = 128  # upper bound of a chunk message's header (magic, length, JSON)
MAX_BACKOFF_S = 60.0


class TransferFailed(Exception):
    pass


class ByteBudget:
    """At most ``limit`` bytes received per ``period_s``; the ledger survives restarts."""

    def __init__(
        self, limit: int | None, period_s: float = 86400.0, path: Path | None = None
    ) -> None:
        self.limit = limit
        self.period_s = period_s
        self.path = path
        self.start = time.time()
        self.used = 0
        self.peak = 0  # most bytes spent in any one period (this process)
        if path is not None and path.exists():
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                doc = orjson.loads(path.read_bytes())
                self.start, self.used = float(doc["start"]), int(doc["used"])

    def _roll(self) -> None:
        if time.time() >= self.start + self.period_s:
            self.start, self.used = time.time(), 0

    def allows(self, n: int) -> bool:
        self._roll()
        return self.limit is None or self.used + n <= self.limit

    def spend(self, n: int) -> None:
        self._roll()
        self.used += n
        self.peak = max(self.peak, self.used)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"start": self.start, "used": self.used}))
            os.replace(tmp, self.path)

    def resumes_at(self) -> float:
        return self.start + self.period_s

    def as_dict(self) -> dict[str, object]:
        self._roll()
        return {"limit": self.limit, "used": self.used, "period_s": self.period_s}


class _ChunkStore:
    """Good chunks of one bundle: on disk (resumable) or in memory (simulator)."""

    def __init__(self, spec: DesiredModel, root: Path | None) -> None:
        assert spec.bundle_id is not None
        self.spec = spec
        self.have: set[int] = set()
        self.dir = root / spec.bundle_id if root is not None else None
        self._mem: dict[int, bytes] = {}
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._data = self.dir / "data"
            if not self._data.exists():
                with open(self._data, "wb") as fh:
                    fh.truncate(spec.size)
            self._resume()

    def _resume(self) -> None:
        assert self.dir is not None
        try:
            claimed = orjson.loads((self.dir / "have.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return
        with open(self._data, "rb") as fh:
            for i in claimed if isinstance(claimed, list) else []:
                if isinstance(i, int) and 0 <= i < len(self.spec.chunks):
                    fh.seek(i * self.spec.chunk_size)
                    blob = fh.read(self._len(i))
                    if hashlib.sha256(blob).hexdigest() == self.spec.chunks[i]:
                        self.have.add(i)
        if self.have:
            log.info(
                "resuming transfer of %s: %d/%d chunks held",
                self.spec.bundle_id,
                len(self.have),
                len(self.spec.chunks),
            )

    def _len(self, i: int) -> int:
        return min(self.spec.chunk_size, self.spec.size - i * self.spec.chunk_size)

    def put(self, i: int, data: bytes) -> None:
        if self.dir is None:
            self._mem[i] = data
        else:
            fd = os.open(self._data, os.O_WRONLY)
            try:
                os.pwrite(fd, data, i * self.spec.chunk_size)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.have.add(i)
            tmp = self.dir / "have.tmp"
            tmp.write_bytes(orjson.dumps(sorted(self.have)))
            os.replace(tmp, self.dir / "have.json")
        self.have.add(i)

    def read_all(self) -> bytes:
        if self.dir is None:
            return b"".join(self._mem[i] for i in range(len(self.spec.chunks)))
        return self._data.read_bytes()


def _read_and_hash(store: _ChunkStore) -> tuple[bytes, str]:
    data = store.read_all()
    return data, hashlib.sha256(data).hexdigest()


class TransferReceiver:
    def __init__(
        self,
        publish: Publish,
        *,
        state_dir: Path | None = None,
        window: int = 4,
        request_timeout_s: float = 5.0,
        budget: ByteBudget | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.publish = publish
        self.max_bytes = max_bytes  # the installer's limit: a bigger bundle is never fetched
        self.root = state_dir / "transfers" if state_dir is not None else None
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self.window = window
        self.timeout = request_timeout_s
        self.budget = budget or ByteBudget(None)
        self._store: _ChunkStore | None = None
        self._mem: _ChunkStore | None = None  # without a state dir: the last bundle's chunks
        self._inflight: dict[int, float] = {}  # chunk index -> deadline (monotonic)
        self._not_before: dict[int, float] = {}  # bad chunk index -> earliest re-request
        self._bad: dict[int, int] = {}  # bad chunk index -> failures in this transfer
        self._gen = 0  # the fetch that owns _store/_inflight (a superseded one leaves them)
        self._arrived = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.bytes_received = 0
        self.chunks_rejected = 0
        self.budget_waits = 0  # times a transfer paused for the byte budget
        self.state = "idle"

    # -- inbound -------------------------------------------------------------------------
    def on_chunk(self, payload: bytes) -> None:
        """Take one ``down/chunk`` inline (the simulator: chunks held in memory)."""
        got = self._accept(payload)
        self.budget.spend(len(payload))  # the link carried it, wanted or not
        if got is not None:
            store, index, data = got
            self._store_chunk(store, index, data)
            self._arrived.set()

    async def on_chunk_async(self, payload: bytes) -> None:
        """Take one ``down/chunk`` with the hashing, the fsynced write and the budget
        ledger in a worker thread (the agent: never an fsync on the event loop). Writes are
        serialised: ``have.json`` is rewritten by each."""
        got = self._accept(payload)
        if got is not None:
            store, index, data = got
            async with self._write_lock:
                await asyncio.to_thread(self._store_chunk, store, index, data, len(payload))
            self._arrived.set()
        else:
            async with self._write_lock:
                await asyncio.to_thread(self.budget.spend, len(payload))

    def _accept(self, payload: bytes) -> tuple[_ChunkStore, int, bytes] | None:
        try:
            bundle_id, index, _total, data = decode_chunk(payload)
        except WireError as exc:
            log.warning("dropping chunk: %s", exc)
            return None
        self.bytes_received += len(payload)
        store = self._store
        if (
            store is None
            or bundle_id != store.spec.bundle_id
            or not 0 <= index < len(store.spec.chunks)
        ):
            return None  # a late answer for a transfer we no longer run
        self._inflight.pop(index, None)
        if index in store.have:
            return None
        if len(data) != store._len(index):  # before anything is hashed or written
            self._reject(store, index, f"is {len(data)} B, expected {store._len(index)} B")
            return None
        return store, index, data

    def _reject(self, store: _ChunkStore, index: int, why: str) -> None:
        """A bad chunk: counted, and asked for again only after a back-off that doubles
        per failure of that chunk (chunk_timeout_s, 2x, 4x ... up to 60 s)."""
        self.chunks_rejected += 1
        fails = self._bad[index] = self._bad.get(index, 0) + 1
        delay = min(self.timeout * 2 ** (fails - 1), MAX_BACKOFF_S)
        self._not_before[index] = time.monotonic() + delay
        log.warning(
            "chunk %d of %s %s; asking again in %.1f s", index, store.spec.bundle_id, why, delay
        )

    def _store_chunk(self, store: _ChunkStore, index: int, data: bytes, spent: int = 0) -> None:
        if spent:
            self.budget.spend(spent)  # the link carried it, wanted or not
        if hashlib.sha256(data).hexdigest() != store.spec.chunks[index]:
            self._reject(store, index, "fails its hash")
        elif index not in store.have:
            store.put(index, data)

    # -- the transfer --------------------------------------------------------------------
    def progress(self) -> dict[str, object]:
        s = self._store
        return {
            "state": self.state,
            "bundle_id": s.spec.bundle_id if s else None,
            "received": len(s.have) if s else 0,
            "total": len(s.spec.chunks) if s else 0,
            "bytes": self.bytes_received,
            "budget": self.budget.as_dict(),
        }

    async def fetch(self, spec: DesiredModel) -> bytes:
        """Fetch, check and return the whole bundle. Cancel the task to abandon it (the
        chunks held so far stay on disk for a later resume)."""
        if not spec.bundle_id or not spec.sha256 or not spec.chunks:
            raise TransferFailed("desired state names no complete bundle")
        if self.max_bytes is not None and spec.size > self.max_bytes:
            raise TransferFailed(
                f"bundle of {spec.size} B is over this gateway's limit of {self.max_bytes} B"
            )
        if self.root is None and self._mem is not None and self._mem.spec == spec:
            store = self._store = self._mem  # no disk (simulator): RAM survives a reconnect
        elif self.root is None:
            store = self._store = self._mem = _ChunkStore(spec, None)
        else:  # opening re-hashes the chunks already held: up to a whole bundle of disk
            store = self._store = await asyncio.to_thread(_ChunkStore, spec, self.root)
            self._mem = None
        self._gen += 1
        gen = self._gen
        self._inflight.clear()
        self._not_before.clear()
        self._bad.clear()
        n = len(spec.chunks)
        backoff = self.timeout
        self.state = "fetching"
        try:
            while len(store.have) < n:
                now = time.monotonic()
                # each request is due by the deadline it was sent with: after a lost window
                # the first re-request comes chunk_timeout_s later, then backs off
                stale = [i for i, due in self._inflight.items() if now >= due]
                for i in stale:
                    del self._inflight[i]
                want: list[int] = []
                budget_blocked = False
                # bytes already asked for count against the budget before they arrive,
                # or a window of requests could overshoot it by window-1 chunks
                committed = sum(store._len(i) + CHUNK_OVERHEAD for i in self._inflight)
                for i in range(n):
                    if len(self._inflight) + len(want) >= self.window:
                        break
                    if i in store.have or i in self._inflight:
                        continue
                    if self._not_before.get(i, 0.0) > now:
                        continue
                    cost = store._len(i) + CHUNK_OVERHEAD
                    if not self.budget.allows(committed + cost):
                        budget_blocked = True
                        break
                    want.append(i)
                    committed += cost
                if want:
                    for i in want:
                        self._inflight[i] = now + backoff
                    self.state = "fetching"
                    await self.publish(
                        transfer_request(
                            spec.bundle_id,
                            want,
                            received=len(store.have),
                            total=n,
                            state="fetching",
                        )
                    )
                elif budget_blocked and not self._inflight:
                    self.state = "budget-exhausted"
                    self.budget_waits += 1
                    await self.publish(
                        transfer_request(
                            spec.bundle_id,
                            [],
                            received=len(store.have),
                            total=n,
                            state=self.state,
                            resumes_at=self.budget.resumes_at(),
                        )
                    )
                    log.warning(
                        "byte budget spent; transfer of %s waits until %s",
                        spec.bundle_id,
                        time.ctime(self.budget.resumes_at()),
                    )
                    await asyncio.sleep(max(1.0, self.budget.resumes_at() - time.time()))
                    continue
                self._arrived.clear()
                waits = [due - now for due in self._inflight.values()]
                waits += [t - now for i, t in self._not_before.items() if i not in store.have]
                wait = max(0.01, min(waits)) if waits else backoff
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=wait)
                    backoff = self.timeout
                except TimeoutError:
                    if self._inflight and min(self._inflight.values()) <= time.monotonic():
                        backoff = min(backoff * 2, MAX_BACKOFF_S)  # the control plane may be away
            async with self._write_lock:  # the last chunk's write has finished
                if self.root is None:
                    data = store.read_all()
                    digest = hashlib.sha256(data).hexdigest()
                else:
                    data, digest = await asyncio.to_thread(_read_and_hash, store)
            self._mem = None  # the caller has it now; a thousand simulated copies add up
            if digest != spec.sha256:
                self.discard(spec.bundle_id)
                raise TransferFailed("assembled bundle does not match its sha256")
            self.state = "complete"
            await self.publish(
                transfer_request(spec.bundle_id, [], received=n, total=n, state="complete")
            )
            return data
        finally:
            if self._gen == gen:  # a newer fetch (a superseding desired state) owns them now
                self._store = None
                self._inflight.clear()
                if self.state != "complete":
                    self.state = "idle"

    def discard(self, bundle_id: str | None = None) -> None:
        """Delete held chunks of one bundle, or of every bundle but the one running."""
        if self.root is None:
            return
        keep = self._store.spec.bundle_id if self._store else None
        for d in self.root.iterdir():
            if (bundle_id is None and d.name != keep) or d.name == bundle_id:
                shutil.rmtree(d, ignore_errors=True)
