"""Chunked transfers under attack or loss, on the agent's own ``TransferReceiver`` with its
on-disk store (the wire protocol is in docs/rollout.md). A fake control plane answers the
gateway's requests in process, so each case takes well under a second of real time."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from edge_agent.rollout.transfer_receiver import TransferReceiver
from farmiq.rollout_wire import DesiredModel, encode_chunk

CHUNK = 1024


def spec_for(data: bytes, bundle_id: str) -> DesiredModel:
    chunks = [hashlib.sha256(data[i : i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)]
    return DesiredModel(
        version=2, bundle_id=bundle_id, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        chunk_size=CHUNK, chunks=chunks,
    )  # fmt: skip


class FakeControlPlane:
    """Records each up/transfer request (with its time) and answers it via ``answer``."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, list[int]]] = []
        self.receiver: TransferReceiver | None = None
        self.answer: Callable[[list[int]], object] = lambda idx: None

    async def publish(self, payload: bytes) -> None:
        req = orjson.loads(payload)
        if req.get("chunks"):
            self.requests.append((time.monotonic(), list(req["chunks"])))
            self.answer(list(req["chunks"]))


def receiver(tmp_path: Path, cp: FakeControlPlane, timeout: float = 0.2) -> TransferReceiver:
    r = TransferReceiver(cp.publish, state_dir=tmp_path, window=4, request_timeout_s=timeout)
    cp.receiver = r
    return r


def deliver_later(r: TransferReceiver, payload: bytes) -> asyncio.Handle:
    return asyncio.get_running_loop().call_soon(
        lambda: asyncio.ensure_future(r.on_chunk_async(payload))
    )


async def test_oversized_chunk_with_a_listed_hash_is_refused_before_it_is_written(
    tmp_path: Path,
) -> None:
    data = bytes(range(256)) * 10  # 2.5 KiB: 3 chunks
    big = b"x" * (8 * CHUNK)  # a chunk whose hash the (compromised) desired state lists
    spec = spec_for(data, "b-oversize")
    spec = spec.model_copy(update={"chunks": [hashlib.sha256(big).hexdigest(), *spec.chunks[1:]]})
    cp = FakeControlPlane()
    r = receiver(tmp_path, cp)
    cp.answer = lambda idx: [
        deliver_later(
            r, encode_chunk("b-oversize", i, 3, big if i == 0 else data[i * CHUNK :][:CHUNK])
        )
        for i in idx
    ]
    task = asyncio.ensure_future(r.fetch(spec))
    await asyncio.sleep(0.5)
    task.cancel()
    assert r.chunks_rejected >= 1
    stored = tmp_path / "transfers" / "b-oversize" / "data"
    assert stored.stat().st_size == len(data), "the 8 KiB chunk reached the disk"
    assert b"x" * 100 not in stored.read_bytes()


async def test_bad_chunks_are_re_requested_with_back_off(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8  # 2 chunks
    cp = FakeControlPlane()
    r = receiver(tmp_path, cp, timeout=0.1)
    cp.answer = lambda idx: [
        deliver_later(r, encode_chunk("b-bad", i, 2, b"\0" * CHUNK)) for i in idx
    ]
    task = asyncio.ensure_future(r.fetch(spec_for(data, "b-bad")))
    await asyncio.sleep(1.6)
    task.cancel()
    asks = [t for t, idx in cp.requests if 0 in idx]
    # without back-off: one request per event-loop turn (hundreds); with it: 0.1, 0.2, 0.4,
    # 0.8 s apart -> at most 5 in 1.6 s
    assert 2 <= len(asks) <= 6, len(asks)
    gaps = [b - a for a, b in itertools.pairwise(asks)]
    assert all(later > earlier * 1.2 for earlier, later in itertools.pairwise(gaps)), gaps


async def test_lost_request_window_is_asked_again_after_chunk_timeout(tmp_path: Path) -> None:
    data = bytes(range(256)) * 8
    cp = FakeControlPlane()
    r = receiver(tmp_path, cp, timeout=0.3)
    answered = {"first": False}

    def answer(idx: list[int]) -> None:
        if not answered["first"]:  # the first window is lost on the way
            answered["first"] = True
            return
        for i in idx:
            deliver_later(r, encode_chunk("b-lost", i, 2, data[i * CHUNK : (i + 1) * CHUNK]))

    cp.answer = answer
    got = await asyncio.wait_for(r.fetch(spec_for(data, "b-lost")), 5)
    assert got == data
    gap = cp.requests[1][0] - cp.requests[0][0]
    assert 0.25 <= gap <= 0.5, f"re-request came {gap:.2f} s after the lost window, not 0.3 s"


async def test_superseding_desired_state_does_not_wedge_the_receiver(tmp_path: Path) -> None:
    old, new = bytes(range(256)) * 8, bytes(reversed(range(256))) * 8
    cp = FakeControlPlane()
    r = receiver(tmp_path, cp, timeout=0.2)
    cp.answer = lambda idx: None  # the old transfer never gets its chunks
    first = asyncio.ensure_future(r.fetch(spec_for(old, "b-old")))
    await asyncio.sleep(0.05)
    first.cancel()  # a newer desired state arrives: the old fetch is cancelled...
    cp.answer = lambda idx: [
        deliver_later(r, encode_chunk("b-new", i, 2, new[i * CHUNK : (i + 1) * CHUNK])) for i in idx
    ]
    second = asyncio.ensure_future(r.fetch(spec_for(new, "b-new")))  # ...and the new one starts
    with pytest.raises(asyncio.CancelledError):
        await first  # its clean-up runs after the new fetch took over
    assert await asyncio.wait_for(second, 5) == new
