"""Labelled feedback from gateways: stored once however often it is re-sent, acknowledged
by its outbox key so the gateway can delete it, malformed batches refused whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from control_plane.learning.examples import ExampleStore
from control_plane.learning.setup import outbox_handler


class Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, json.loads(payload)))


def test_feedback_is_stored_once_acked_and_windowed(tmp_path: Path) -> None:
    store = ExampleStore(create_engine(f"sqlite:///{tmp_path / 'cp.db'}"))
    store.create_tables()
    bus = Bus()
    handle = outbox_handler(store.ingest, "labelled examples", bus)
    batch = {
        "type": "feedback_batch",
        "key": "gw-1/fb/1",
        "model": "barn",
        "examples": [{"ts": 100.0 + i, "inputs": [i, 2 * i], "truth": "low"} for i in range(5)],
    }
    handle("gw-1", json.dumps(batch).encode())
    handle("gw-1", json.dumps(batch).encode())  # re-sent after a lost ack
    X, y, ts = store.window("barn", since=101, until=103)
    assert ts.tolist() == [101.0, 102.0, 103.0]
    assert X.tolist() == [[1, 2], [2, 4], [3, 6]] and list(y) == ["low"] * 3
    assert len(store.window("barn")[0]) == 5
    assert bus.sent == [("farmiq/v1/gw/gw-1/down/ack", {"keys": ["gw-1/fb/1"]})] * 2

    bad = {**batch, "key": "gw-1/fb/2", "examples": [{"ts": 1, "inputs": ["nan?"], "truth": 1}]}
    handle("gw-1", json.dumps(bad).encode())
    handle("gw-1", b"{not json")
    assert len(store.window("barn")[0]) == 5  # nothing of the bad batch stored
    assert bus.sent[-1] == ("farmiq/v1/gw/gw-1/down/ack", {"keys": ["gw-1/fb/2"]})
