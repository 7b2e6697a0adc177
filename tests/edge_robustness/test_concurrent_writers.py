"""The agent's SQLite stores are written from worker threads (so commits never block the
event loop): writers on several threads at once must neither fail nor lose a row."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson

from edge_agent.features.feature_cache import FeatureCache
from edge_agent.uplink.outbox import Outbox

THREADS = 4
PER_THREAD = 150


def _hammer(work: list[threading.Thread]) -> None:
    for t in work:
        t.start()
    for t in work:
        t.join(60)


def test_outbox_producers_on_threads_while_publisher_and_acks_run(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    published: set[str] = set()

    async def main() -> int:
        box: Outbox

        async def publish(topic: str, payload: bytes, qos: int) -> None:
            key = orjson.loads(payload)["key"]
            published.add(key)
            # the control plane stores it and acknowledges, from another thread
            await asyncio.to_thread(box.handle_ack_message, orjson.dumps({"keys": [key]}))

        box = Outbox(tmp_path / "outbox.db", publish, ack_timeout_s=30)
        runner = asyncio.create_task(box.run())
        await asyncio.sleep(0)

        def produce(t: int) -> None:
            try:
                for i in range(PER_THREAD):
                    key = f"t{t}-{i}"
                    box.put("up/x", orjson.dumps({"key": key}), key)
            except BaseException as exc:
                errors.append(exc)

        await asyncio.to_thread(
            _hammer, [threading.Thread(target=produce, args=(t,)) for t in range(THREADS)]
        )
        for _ in range(200):
            if box.pending() == 0:
                break
            await asyncio.sleep(0.05)
        runner.cancel()
        left = box.pending()
        box.close()
        return left

    left = asyncio.run(main())
    assert not errors, errors[:3]
    assert len(published) == THREADS * PER_THREAD
    assert left == 0


def test_feature_cache_writers_on_threads(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "features.db")
    errors: list[BaseException] = []

    def ingest(t: int) -> None:
        try:
            for i in range(PER_THREAD):
                cache.ingest([(f"b{t}", "temperature", 1_700_000_000 + i, 20.0 + i)])
        except BaseException as exc:
            errors.append(exc)

    def cloud(t: int) -> None:
        try:
            for i in range(PER_THREAD):
                row = {"entity_id": f"f{t}", "event_ts": 1_700_000_000 + i,
                       "values": {"flock_age_days": i}}  # fmt: skip
                doc = {"kind": "farmiq-features/1", "views": {"flock_profile": [row]}}
                cache.apply_cloud_features(orjson.dumps(doc))
        except BaseException as exc:
            errors.append(exc)

    work = [threading.Thread(target=ingest, args=(t,)) for t in range(THREADS)]
    work += [threading.Thread(target=cloud, args=(t,)) for t in range(THREADS)]
    _hammer(work)
    assert not errors, errors[:3]
    n = cache.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    assert n == THREADS * PER_THREAD
    cache.close()
