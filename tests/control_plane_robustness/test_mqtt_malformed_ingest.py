"""Malformed MQTT messages from a gateway never crash or wedge the control plane's ingest.

Garbage, wrong JSON types, absurd nesting, oversized payloads and odd device ids go to
every ``up/`` leaf the control plane ingests, over the real broker; afterwards the good
state is still the stored one, a poison drift window is acknowledged (rejected) instead of
being resent forever, no handler failed with a traceback, and a real agent still gets a
deployment installed and acknowledged.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from farmiq import topics
from tests.support.mqtt import wait_until

LEAVES = [
    topics.INSTALL_ACK,
    topics.STATE,
    topics.STATUS,
    topics.HEALTH,
    topics.SHADOW,
    topics.TRANSFER,
    topics.DRIFT,
    topics.ACTUATOR_RESULT,
    topics.TRUST,
    topics.ALERT,
    "no/such/leaf",
]
WRONG_TYPES: list[Any] = [
    {"ok": "yes", "bundle_id": 5, "rollout": {"x": 1}, "version": [1], "code": 7},
    {"farm_id": {"a": 1}, "tags": 5, "hardware_class": [1], "models": "x", "entities": [1]},
    {"tags": [[1]], "entities": {"barn_id": [1, 2]}},
    {"models": {"barn": {"version": 1, "requests": "many", "errors": {}, "p99_ms": "slow"}}},
    {"model": 7, "candidate_version": "two", "rows": "x", "agree": []},
    {"bundle_id": [], "chunks": "abc"},
    {"bundle_id": "nope", "chunks": [1e300, -1, "2"]},
    {"command_id": [1], "ok": True, "key": {"k": 1}},
    {"id": 5, "device_id": 5, "type": "concept_drift", "n_seen": "x"},
]
# States with the wrong types (a well-typed state, even an odd one, is the new state).
BAD_STATES: list[Any] = [
    {"farm_id": {"a": 1}},
    {"tags": 5},
    {"tags": [[1]]},
    {"hardware_class": [1]},
    {"models": "x"},
    {"models": {"barn": 5}},
    {"entities": [1]},
    {"farm_id": "f" * 500},
    {"device_id": "gw-someone-else", "farm_id": "stolen"},
]
GARBAGE = [b"", b"\x00\xff\xfe garbage", b"[]", b"null", b"42", b'"online"', b"{", b"[" * 100_000]
HUGE = orjson.dumps({"farm_id": "f", "blob": "x" * (2 * 1024 * 1024)})


class Publisher:
    """One QoS 1 connection for many messages (a connection per message is slow)."""

    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-bad-gw-{uuid.uuid4().hex[:8]}"
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.acks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.c.on_message = self._on_message

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        if isinstance(doc.get("signed"), dict):  # a director envelope (docs/security.md)
            doc = json.loads(base64.b64decode(doc["signed"]["body"]))
        with self._lock:
            self.acks.append(doc)

    def acked_keys(self) -> set[str]:
        with self._lock:
            return {k for a in self.acks for k in a.get("keys", []) if isinstance(k, str)}

    def send(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _window(device: str, wid: str, **over: Any) -> bytes:
    doc = {
        "id": wid,
        "device_id": device,
        "model": "barn",
        "version": "1",
        "schema": "s",
        "start": 0.0,
        "end": 1.0,
        "n": 1,
        "features": {"temperature_c": {"counts": [1, 0]}},
        **over,
    }
    return orjson.dumps(doc)


def test_malformed_reports_on_every_leaf_leave_ingest_working(
    control_plane, mqtt_port, agent_factory, device_id, barn_model
) -> None:
    bad_gw = f"gw-bad-{uuid.uuid4().hex[:8]}"
    pub = Publisher(mqtt_port)
    try:
        pub.c.subscribe(topics.down(bad_gw, topics.OUTBOX_ACK), qos=1)
        good_state = {"farm_id": "farm-good", "tags": ["north"], "models": {}}
        pub.send(topics.up(bad_gw, topics.STATE), orjson.dumps(good_state))
        with control_plane.client() as c:
            wait_until(
                lambda: c.get(f"/api/v1/devices/{bad_gw}").status_code == 200,
                what="the good state stored",
            )
        for leaf in LEAVES:
            docs = BAD_STATES if leaf == topics.STATE else WRONG_TYPES
            for raw in GARBAGE + [orjson.dumps(doc) for doc in docs] + [HUGE]:
                pub.send(topics.up(bad_gw, leaf), raw)
        for odd in ["x" * 300, "dev with spaces", "ü-dev"]:
            for leaf in (topics.STATE, topics.INSTALL_ACK, topics.HEALTH, topics.DRIFT):
                pub.send(f"farmiq/v1/gw/{odd}/up/{leaf}", b'{"ok": true, "farm_id": "f"}')
        # Drift windows that can never be stored are acknowledged (rejected), not left for
        # the gateway's outbox to resend forever; a good one after them is stored.
        pub.send(topics.up(bad_gw, topics.DRIFT), _window(bad_gw, "w-bad-farm", farm_id={"x": 1}))
        pub.send(topics.up(bad_gw, topics.DRIFT), _window(bad_gw, "w-bad-n", n=1e300))
        pub.send(topics.up(bad_gw, topics.DRIFT), _window(bad_gw, "w-good"))
        wait_until(
            lambda: {"w-bad-farm", "w-bad-n", "w-good"} <= pub.acked_keys(),
            timeout=30,
            what="drift windows acknowledged",
        )
    finally:
        pub.close()

    with control_plane.client() as c:
        assert c.get("/ready").status_code == 200, c.get("/ready").text
        dev = c.get(f"/api/v1/devices/{bad_gw}").json()
        listed = c.get("/api/v1/devices")  # reads every stored state: 500 if one is garbage
        assert listed.status_code == 200, listed.text
    assert dev["farm_id"] == "farm-good" and dev["tags"] == ["north"], dev
    assert dev["status"] in ("online", "unknown"), dev  # '"online"' JSON text is no status

    failures = [
        line
        for line in control_plane.log_text().splitlines()
        if "failed (device" in line and (bad_gw in line or "ü-dev" in line or "xxxx" in line)
    ]
    assert not failures, f"{len(failures)} handler failures, first: {failures[0][:500]}"

    # The ingest still works end to end: a real agent's install is acknowledged.
    model = f"robust-{uuid.uuid4().hex[:6]}"
    agent = agent_factory(device_id, control_plane.trust_root())
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", barn_model.onnx_bytes)},
            data={"name": model},
        )
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        assert c.put(f"/api/v1/models/{model}/promote", json={"version": version}).is_success
        r = c.post("/api/v1/deployments", json={"model": model, "devices": [device_id]})
        assert r.status_code == 200, r.text
        group = r.json()["id"]

        def status() -> str | None:
            s = c.get(f"/api/v1/deployments/{group}").json()["devices"][device_id]["status"]
            return s if s != "sent" else None

        assert wait_until(status, timeout=60, what="install acknowledged") == "installed"
    assert agent.installed_version(model) == version
