"""Labelled feedback posted to a gateway reaches the control plane's example store on
``up/feedback`` through the durable outbox: batched, re-sent after a kill -9 until
acknowledged on ``down/ack``, then gone from the gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import create_engine

from control_plane.learning.examples import ExampleStore
from farmiq import topics
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot
from farmiq.director.envelope import seal
from tests.security.helpers import Listener
from tests.support.procs import AgentProc

MODEL = "barn-ventilation"


def _outbox_depth(agent: AgentProc) -> float:
    for line in agent.get("/metrics").text.splitlines():
        if line.startswith("farmiq_agent_outbox_depth "):
            return float(line.split()[1])
    raise AssertionError("no farmiq_agent_outbox_depth")


def _batches(listener: Listener, topic: str, seen: int = 0) -> list[dict[str, Any]]:
    return [json.loads(p) for p in listener.on(topic)[seen:]]


def test_feedback_reaches_the_example_store_resumably(
    agent_factory: Callable[..., AgentProc], device_id: str, mqtt_port: int, tmp_path: Any
) -> None:
    director = Signer.generate()  # outbox acks are director documents (docs/security.md)
    trust = TrustRoot.for_signers([Signer.generate()], director=[director]).model_dump(mode="json")
    agent = agent_factory(device_id, trust)
    agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
    topic = topics.up(device_id, "feedback")
    listener = Listener(mqtt_port, [topic])
    try:
        items = [
            {"prediction": 0, "truth": ["off", "low"][i % 2], "inputs": [20.0 + i, 60.0], "ts": i}
            for i in range(1200)
        ] + [{"prediction": 1, "truth": 1}]  # no inputs: concept drift only
        r = agent.post("/api/v1/feedback", {"model": MODEL, "items": items})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1201 and r.json()["examples_queued"] == 1200

        deadline = time.time() + 20
        while len({b["key"] for b in _batches(listener, topic)}) < 3 and time.time() < deadline:
            time.sleep(0.1)
        batches = {b["key"]: b for b in _batches(listener, topic)}
        assert sorted(len(b["examples"]) for b in batches.values()) == [200, 500, 500]
        # Not acknowledged: after a kill -9 the gateway sends them again.
        agent.kill()
        seen = len(listener.on(topic))  # before the restart: it re-sends as it connects
        agent.start()
        deadline = time.time() + 30
        while len({b["key"] for b in _batches(listener, topic, seen)}) < 3:
            assert time.time() < deadline, "unacknowledged feedback not re-sent after restart"
            time.sleep(0.1)

        # The control plane's own store takes every batch as it is.
        store = ExampleStore(create_engine(f"sqlite:///{tmp_path / 'examples.db'}"))
        store.create_tables()
        stored = sum(store.ingest(device_id, orjson.dumps(b)) for b in batches.values())
        assert stored == 1200
        # Acknowledged: the outbox lets them go and sends no more.
        listener.publish(
            topics.down(device_id, topics.OUTBOX_ACK),
            seal(
                [director], leaf=topics.OUTBOX_ACK, device=device_id,
                counter=time.time_ns() // 1000, body=orjson.dumps({"keys": list(batches)}),
            ),
        )  # fmt: skip
        deadline = time.time() + 10
        while _outbox_depth(agent) and time.time() < deadline:
            time.sleep(0.1)
        assert _outbox_depth(agent) == 0

        # Inputs that are no feature vector: refused, nothing counted or queued.
        bad = {"model": MODEL, "items": [{"prediction": 0, "truth": 0, "inputs": ["x"]}]}
        r = agent.post("/api/v1/feedback", bad)
        assert r.status_code == 400 and "inputs" in r.json()["error"]
        assert _outbox_depth(agent) == 0
    finally:
        listener.close()
