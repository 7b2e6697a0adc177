"""Small MQTT and polling helpers for tests that act as the cloud or as an operator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one QoS 1 message and wait for the broker to take it."""
    publish_many(port, [(topic, payload)], retain=retain)


def publish_many(port: int, messages: list[tuple[str, bytes]], retain: bool = False) -> None:
    """Publish QoS 1 messages on one connection, waiting for the broker to take each."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1, retain=retain) for t, p in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


def retained(port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on ``topic`` (waiting up to ``timeout`` for one), else None."""
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda cl, ud, msg: got.append(bytes(msg.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic, 1)
    c.loop_start()
    deadline = time.time() + timeout
    while not got and time.time() < deadline:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    return got[-1] if got else None
