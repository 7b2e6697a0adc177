"""A control plane started with a ``learning`` section in its drift config takes labelled
feedback from gateways over MQTT (``up/feedback``), stores it, and acknowledges the outbox
key so the gateway can delete it; a malformed batch is acknowledged and dropped, and the
process keeps serving."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import create_engine

from control_plane.learning.examples import ExampleStore
from tests.support.mqtt import publish, wait_until
from tests.support.procs import ControlPlaneProc


@pytest.fixture
def learning_cp(tmp_path: Path, mqtt_port: int) -> Any:
    config = tmp_path / "drift.json"
    config.write_text(json.dumps({"learning": {"models": {"barn": {"min_rows": 10}}}}))
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port)
    cp.env = {**cp.env, "FARMIQ_DRIFT_CONFIG": str(config)}
    cp.start()
    yield cp
    cp.stop()


def test_gateway_feedback_reaches_the_learning_store_and_is_acked(
    learning_cp: ControlPlaneProc, mqtt_port: int
) -> None:
    device = f"gw-learn-{uuid.uuid4().hex[:6]}"
    acks: list[dict[str, Any]] = []
    got = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        if "signatures" in doc:  # sealed by the director (farmiq/director/envelope.py)
            doc = json.loads(base64.b64decode(doc["signed"]["body"]))
        acks.append(doc)
        got.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{device}")
    sub.on_message = on_message
    sub.connect("127.0.0.1", mqtt_port)
    sub.subscribe(f"farmiq/v1/gw/{device}/down/ack", qos=1)
    sub.loop_start()
    try:
        batch = {
            "type": "feedback_batch",
            "key": f"{device}/fb/1",
            "model": "barn",
            "examples": [
                {"ts": 1000.0 + i, "inputs": [20.0 + i, 60.0, 10.0, 1.5], "truth": "low"}
                for i in range(12)
            ],
        }
        bad = {"type": "feedback_batch", "key": f"{device}/fb/2", "model": "barn"}

        def send_and_wait() -> bool:
            # the control plane may subscribe a moment after /ready: re-send (idempotent)
            publish(mqtt_port, f"farmiq/v1/gw/{device}/up/feedback", json.dumps(batch).encode())
            return got.wait(2)

        wait_until(send_and_wait, 60, "the feedback ack")
        assert {"keys": [f"{device}/fb/1"]} in acks
        publish(mqtt_port, f"farmiq/v1/gw/{device}/up/feedback", json.dumps(bad).encode())
        wait_until(lambda: {"keys": [f"{device}/fb/2"]} in acks, 30, "the malformed batch ack")
    finally:
        sub.loop_stop()
        sub.disconnect()
    store = ExampleStore(create_engine(f"sqlite:///{learning_cp.data_dir / 'control-plane.db'}"))
    X, y, _ = store.window("barn")
    assert X.shape == (12, 4) and set(y) == {"low"}  # stored once however often re-sent
    with learning_cp.client() as c:
        assert c.get("/ready").status_code == 200
