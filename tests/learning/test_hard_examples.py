"""Hard examples, from the gateway's cascade to a label in the training data: the router
keeps inputs it was unsure about while the cloud is down; the uploader moves them into the
durable outbox (and out of the store only then); the control plane stores each once, lists
the least confident first for labelling, and a label makes it a labelled example at the
time the gateway saw it. A full outbox keeps them on the gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from control_plane.learning.examples import ExampleError, ExampleStore
from control_plane.learning.hard_examples import HardExampleStore
from control_plane.learning.setup import outbox_handler
from edge_agent.inference.escalation_store import EscalationStore
from edge_agent.inference.targets.triton_target import TritonTarget
from edge_agent.telemetry.hard_example_upload import HARD_LEAF, HardExampleUploader
from edge_agent.uplink.outbox import Outbox
from tests.inference.conftest import make_model
from tests.inference.test_router import _router


class Bus:
    def __init__(self) -> None:
        self.acks: list[Any] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.acks.append((topic, json.loads(payload)))


def _kept(barn_model: Any, tmp_path: Path) -> EscalationStore:
    store = EscalationStore(tmp_path / "esc")
    cloud = TritonTarget("http://127.0.0.1:9", name="cloud")  # nothing listens: the link is down
    r = _router(make_model(barn_model.onnx_bytes, confidence_threshold=0.99), remotes={"cloud": cloud},
                escalations=store, breaker_failures=1, breaker_reset_s=30)  # fmt: skip
    rows = barn_model.X_test[:12]

    async def go() -> None:
        for i in range(0, 12, 3):
            await r.infer("barn", rows[i : i + 3].tolist())
        await r.flush()
        await r.close()

    asyncio.run(go())
    assert len(store) >= 2
    return store


def test_kept_inputs_reach_the_labelling_queue_and_the_training_data(
    barn_model: Any, tmp_path: Path
) -> None:
    store = _kept(barn_model, tmp_path)
    kept_rows = sum(len(next(iter(e["inputs"].values()))) for e in store.entries())
    outbox = Outbox(tmp_path / "outbox.db")
    up = HardExampleUploader(store, outbox, "gw-7", batch=100)
    entries = len(store)
    assert up.upload_once() == entries
    assert len(store) == 0  # moved: the outbox holds them now
    ((key, topic, payload),) = outbox.items()
    assert topic == f"farmiq/v1/gw/gw-7/up/{HARD_LEAF}"
    doc = json.loads(payload)
    assert doc["model"] == "barn" and len(doc["examples"]) == kept_rows

    # the control plane: stored once however often the outbox re-sends, then acked
    examples = ExampleStore(create_engine(f"sqlite:///{tmp_path / 'cp.db'}"))
    hard = HardExampleStore(examples)
    hard.create_tables()
    bus = Bus()
    handle = outbox_handler(hard.ingest, "hard examples", bus)
    handle("gw-7", payload)
    handle("gw-7", payload)
    assert bus.acks == [("farmiq/v1/gw/gw-7/down/ack", {"keys": [key]})] * 2
    assert hard.counts("barn") == {"pending": kept_rows, "labelled": 0}
    queue = hard.pending("barn")
    confs = [q["confidence"] for q in queue]
    assert confs == sorted(confs)  # least confident first
    assert len(queue[0]["inputs"]) == barn_model.X_test.shape[1]

    # an operator labels two of them (and names one that does not exist)
    got = hard.label("barn", [{"id": queue[0]["id"], "truth": "high"},
                              {"id": queue[1]["id"], "truth": "low"}, {"id": 99999, "truth": "x"}])  # fmt: skip
    assert got["labelled"] == 2 and got["unknown"] == [99999]
    assert hard.counts("barn") == {"pending": kept_rows - 2, "labelled": 2}
    X, y, ts = examples.window("barn")
    assert sorted(y) == ["high", "low"] and sorted(ts) == sorted([queue[0]["ts"], queue[1]["ts"]])
    assert X.tolist()[list(y).index("high")] == pytest.approx(queue[0]["inputs"])
    with pytest.raises(ExampleError):
        hard.ingest("gw-7", {"model": "barn", "examples": [{"id": "x", "ts": 1.0}]})


def test_a_full_outbox_keeps_the_hard_examples_on_the_gateway(
    barn_model: Any, tmp_path: Path
) -> None:
    store = _kept(barn_model, tmp_path)
    before = len(store)
    outbox = Outbox(tmp_path / "outbox.db", disk_budget_bytes=64)  # nothing fits
    assert HardExampleUploader(store, outbox, "gw-7").upload_once() == 0
    assert len(store) == before and outbox.pending() == 0


def test_a_farms_erasure_takes_its_examples_and_leaves_the_others(tmp_path: Path) -> None:
    import contextlib
    from types import SimpleNamespace

    import mlflow
    from sqlalchemy.orm import sessionmaker

    from control_plane.db import Base
    from control_plane.farm_data import FarmData
    from control_plane.table_registry import metadata
    from control_plane.tables import Device

    engine = create_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    metadata()  # every core table registered on Base
    Base.metadata.create_all(engine)
    examples = ExampleStore(engine)
    hard = HardExampleStore(examples)
    hard.create_tables()
    sessions = sessionmaker(engine)
    with sessions.begin() as s:
        s.add_all(
            [Device(device_id="gw-a", farm_id="farm-a"), Device(device_id="gw-b", farm_id="farm-b")]
        )
    for gw in ("gw-a", "gw-b"):
        examples.ingest(
            gw, {"model": "barn", "examples": [{"ts": 1.0, "inputs": [1.0], "truth": "low"}]}
        )
        examples.ingest(gw, {"model": "barn", "examples": [
            {"ts": 2.0, "entity": {"barn_id": "b1"}, "truth": "low"}]})  # fmt: skip
        hard.ingest(gw, {"model": "barn", "examples": [{"id": "e1", "ts": 3.0, "inputs": [2.0]}]})

    @contextlib.contextmanager
    def session():  # type: ignore[no-untyped-def]
        with sessions() as s:
            yield s

    ctx = SimpleNamespace(engine=engine, session=session, services={},
                          mlflow=mlflow.MlflowClient(f"sqlite:///{tmp_path / 'ml.db'}"))  # fmt: skip
    data = FarmData(ctx)
    exported = data.export("farm-a")
    assert len(exported["tables"]["learning_hard_examples"]) == 1
    report = data.erase("farm-a")
    assert report["tables"]["learning_labelled_examples"] == 1
    assert report["tables"]["learning_entity_examples"] == 1
    assert report["tables"]["learning_hard_examples"] == 1
    assert len(examples.window("barn")[0]) == 1  # farm-b's
    assert hard.counts("barn") == {"pending": 1, "labelled": 0}
