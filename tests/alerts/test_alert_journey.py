"""An operator's alerts from a live control plane: gateways report over MQTT, a rollout is
aborted, and the alerts arrive on RabbitMQ (``<kind>.<severity>``), on the MQTT alert
topics and at a real HTTP webhook receiver that checks the HMAC the way docs/security.md
tells receivers to."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from control_plane.security.webhooks import verify_webhook
from farmiq import topics
from tests.alerts.conftest import Consumer, WebhookReceiver
from tests.ops.conftest import publish
from tests.support.procs import ControlPlaneProc

MODEL = "barn-ventilation"
SECRET = "receiver-shared-secret"


def receiver_check(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """The receiver's check exactly as docs/security.md gives it (independent of our code)."""
    h = {k.lower(): v for k, v in headers.items()}
    ts, sig = h["x-farmiq-timestamp"], h["x-farmiq-signature"]
    if abs(now - int(ts)) > 300:
        return False
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("v1=" + mac, sig)


def _wait(pred: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def mqtt_alerts(mqtt_port: int) -> Any:
    got: list[tuple[str, dict[str, Any]]] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"alerts-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda cl, ud, msg: got.append((msg.topic, json.loads(msg.payload)))
    c.connect("127.0.0.1", mqtt_port)
    c.subscribe(topics.cp_alert("#"), 1)
    c.loop_start()
    yield got
    c.loop_stop()
    c.disconnect()


def test_gateway_and_rollout_alerts_reach_rabbitmq_mqtt_and_a_signed_webhook(
    tmp_path: Path,
    mqtt_port: int,
    rabbitmq: str,
    consumer: Consumer,
    receiver: WebhookReceiver,
    mqtt_alerts: list[tuple[str, dict[str, Any]]],
    barn_model: Any,
) -> None:
    alerts = {
        "amqp_url": rabbitmq,
        "exchange": consumer.exchange,
        "webhook_url": receiver.url,
        "webhook_secret": SECRET,
    }
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port, alerts=alerts)
    cp.start()
    dev = f"gw-alerts-{uuid.uuid4().hex[:8]}"
    try:
        state = {"device_id": dev, "farm_id": "farm-alerts", "models": {}, "tags": []}
        publish(mqtt_port, topics.up(dev, topics.STATE), orjson.dumps(state))
        publish(mqtt_port, topics.up(dev, topics.STATUS), b"online")  # first sight: baseline
        with cp.client() as c:
            _wait(lambda: c.get(f"/api/v1/devices/{dev}").status_code == 200, what="device")
        publish(mqtt_port, topics.up(dev, topics.STATUS), b"offline")
        publish(mqtt_port, topics.up(dev, topics.STATUS), b"online")
        ack = {"ok": False, "code": "bad-signature", "reason": "no trusted key", "name": MODEL}
        publish(mqtt_port, topics.up(dev, topics.INSTALL_ACK), orjson.dumps(ack))
        health = {"models": {}, "breakers": {"triton": {"state": "open"}}}
        publish(mqtt_port, topics.up(dev, topics.HEALTH), orjson.dumps(health))
        publish(mqtt_port, topics.up(dev, topics.HEALTH), orjson.dumps(health))  # still open
        with cp.client() as c:
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": MODEL, "meta": json.dumps({"task": "classification"})},
            )
            assert r.status_code == 200, r.text
            version = r.json()["version"]
            r = c.post(
                "/api/v1/rollouts",
                json={"model": MODEL, "version": version, "targeting": {"devices": [dev]},
                      "soak_s": 3600},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            assert c.post(f"/api/v1/rollouts/{rid}/abort").status_code == 200

        want = {
            "gateway_offline.warning",
            "gateway_online.info",
            "install_rejected.warning",
            "breaker_open.warning",
            "rollout_aborted.critical",
        }

        # The machine's broker is shared: other tests' gateways raise alerts here too.
        def ours(doc: dict[str, Any]) -> bool:
            return doc.get("device_id") == dev or doc.get("links", {}).get("rollout", "").endswith(
                f"/{rid}"
            )

        got: list[tuple[Any, Any, dict[str, Any]]] = []
        deadline = time.time() + 30
        while {m.routing_key for m, _, _ in got} != want and time.time() < deadline:
            for m, p, b in consumer.get(1, timeout=1.0):
                if ours(json.loads(b)):
                    got.append((m, p, json.loads(b)))
        by_key = {m.routing_key: b for m, _, b in got}
        assert set(by_key) == want, by_key.keys()
        assert len(got) == len(want)  # the repeated health report raised no second alert
        rejected = by_key["install_rejected.warning"]
        assert rejected["details"]["code"] == "bad-signature" and rejected["model"] == MODEL
        assert rejected["device_id"] == dev and rejected["farm_id"] == "farm-alerts"
        aborted = by_key["rollout_aborted.critical"]
        assert aborted["model"] == MODEL and aborted["version"] == version
        assert aborted["links"]["rollout"] == f"/api/v1/rollouts/{rid}"
        assert all(p.delivery_mode == 2 for _, p, _ in got)

        # The same alerts on the MQTT topics, as before.
        kinds = {k.split(".")[0] for k in want}
        _wait(lambda: {a["kind"] for _, a in mqtt_alerts if ours(a)} >= kinds, what="MQTT alerts")
        assert {t for t, a in mqtt_alerts if ours(a)} == {topics.cp_alert(k) for k in kinds}

        # ...and at the webhook, each signed over its timestamp and body.
        def signed() -> list[tuple[dict[str, str], bytes]]:
            return [(h, b) for h, b in receiver.received if ours(json.loads(b))]

        _wait(lambda: len(signed()) >= len(want), what="webhook deliveries")
        assert {json.loads(b)["kind"] for _, b in signed()} == kinds
        for headers, body in receiver.received:
            assert receiver_check(SECRET, headers, body, time.time())
            verify_webhook(SECRET, body, headers)
            assert not receiver_check("another secret", headers, body, time.time())
            assert not receiver_check(SECRET, headers, body + b" ", time.time())
        # The dashboard's alerts panel has them too, newest first.
        with cp.client() as c:
            panel = c.get("/dashboard/data").json()["alerts"]
        assert {a["kind"] for a in panel} >= {k.split(".")[0] for k in want}
    finally:
        cp.stop()
        publish(mqtt_port, topics.up(dev, topics.STATUS), b"", retain=True)
