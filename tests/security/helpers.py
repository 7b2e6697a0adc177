"""Helpers for the security suite: a tiny model whose answer names its version, signed root
rotations, and an MQTT listener for what gateways report."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from onnx import TensorProto, helper
from tuf.api.metadata import Metadata, Root

from farmiq.bundle import signature_process
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from provisioning.fleet import FleetPaths, init_fleet, signer_from_file


def scale_model(k: float) -> bytes:
    """y = k * x: each version answers differently, so we can see which one serves."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor("k", TensorProto.FLOAT, [1], [k])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()  # type: ignore[no-any-return]


def next_root(
    fleet: FleetPaths,
    current: Path,
    signer_keys: list[int],
    *,
    drop_targets: int | None = None,
    add_targets: Signer | None = None,
    version_step: int = 1,
) -> bytes:
    """The root after ``current`` (a root.json), signed by the fleet's root keys ``signer_keys``."""
    from securesystemslib.signer import SSlibKey

    md = Metadata[Root].from_file(str(current))
    root = md.signed
    root.version += version_step
    if drop_targets is not None:
        pub = Signer.load(fleet.targets_key(drop_targets)).public_key
        root.revoke_key(SSlibKey.from_crypto(pub).keyid, "targets")
    if add_targets is not None:
        root.add_key(SSlibKey.from_crypto(add_targets.public_key), "targets")
    md.signatures.clear()
    for n in signer_keys:
        md.sign(signer_from_file(fleet.root_key(n)), append=True)
    return md.to_bytes()


class Listener:
    """Subscribes to topics on the real broker and keeps what arrives, in order."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sec-listen-{time.time_ns()}"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        if not self._subscribed.wait(10):
            raise RuntimeError("broker never confirmed the subscription")

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def wait_new(self, topic: str, seen: int, timeout: float = 30) -> bytes:
        """The first message on ``topic`` after the ``seen`` ones already there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(topic)
            if len(got) > seen:
                return got[seen]
            time.sleep(0.02)
        raise AssertionError(f"nothing new on {topic} within {timeout} s")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def threshold_fleet(directory: Path) -> FleetPaths:
    """A fleet whose root and bundle signing both need 2 of 3 keys."""
    return init_fleet(directory, root_threshold=2, root_keys=3, targets_threshold=2, targets_keys=3)


def fleet_signers(fleet: FleetPaths) -> list[Signer]:
    return [Signer.load(p) for p in fleet.targets_keys()]


def regression_bundle(signers: list[Signer], version: int, name: str = "barn", **kw: Any) -> bytes:
    """A bundle whose model scales its input by ``version``, so answers name the version."""
    return build_bundle(
        scale_model(float(version)), name=name, version=version, signers=signers,
        task="regression", **kw,
    )  # fmt: skip


@pytest.fixture(params=["in-process", "child-process"])
def signature_checks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: signatures checked in-process (control plane, CLI) and in a child
    process, as the gateway daemon checks them (farmiq/bundle/signature_process.py)."""
    monkeypatch.setattr(signature_process, "_isolated", request.param == "child-process")
    return str(request.param)
