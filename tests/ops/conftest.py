"""Fixtures of the operations tests: a local signer and trust root, a signed barn bundle,
an sd_notify listener socket, and MQTT helpers."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot

MODEL = "barn-ventilation"


@pytest.fixture(scope="session")
def ops_signer() -> Signer:
    return Signer.generate()


@pytest.fixture(scope="session")
def ops_trust(ops_signer: Signer) -> dict[str, Any]:
    return TrustRoot.for_signers([ops_signer]).model_dump(mode="json")


@pytest.fixture(scope="session")
def barn_bundle(barn_model: Any, ops_signer: Signer) -> bytes:
    return build_bundle(
        barn_model.onnx_bytes,
        name=MODEL,
        version=1,
        signers=[ops_signer],
        labels=["off", "low", "high"],
        feature_names=["temperature_c", "humidity_pct", "ammonia_ppm", "co2_ppm"],
    )


def publish(port: int, topic: str, payload: bytes, retain: bool = False) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ops-pub-{uuid.uuid4().hex[:8]}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket (abstract namespace)."""

    def __init__(self) -> None:
        self.name = f"@farmiq-ops-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(
        self, pred: Callable[[dict[str, str]], bool], timeout: float = 30
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.drain()
            for _, msg in self.messages[seen:]:
                if pred(msg):
                    return msg
            seen = len(self.messages)
        raise AssertionError(f"no matching notify message; got {[m for _, m in self.messages]}")

    def with_key(self, key: str) -> list[dict[str, str]]:
        self.drain()
        return [m for _, m in self.messages if key in m]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()
