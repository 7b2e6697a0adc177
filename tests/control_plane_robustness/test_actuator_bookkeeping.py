"""Actuator bookkeeping in the control plane: what an operator reads back about a command.

The service runs on a real SQLite database; the MQTT bus is replaced by a recorder of what
would be published (the bookkeeping is the subject here; the MQTT path is covered by
tests/integration/test_gateway_data_path.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from control_plane.actuators import ActuatorService, CommandIdConflict
from control_plane.db import Database


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.handlers: dict[str, Callable[[str, bytes], None]] = {}

    def on(self, leaf: str, handler: Callable[[str, bytes], None]) -> None:
        self.handlers[leaf] = handler

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.published.append((topic, payload))


@pytest.fixture
def svc(tmp_path: Path) -> ActuatorService:
    db = Database(f"sqlite:///{tmp_path / 'cp.db'}")
    db.create_all()
    return ActuatorService(db, RecordingBus())  # type: ignore[arg-type]


def _result(command_id: str, ok: bool, **extra: Any) -> bytes:
    return orjson.dumps({"command_id": command_id, "ok": ok, "key": f"k/{command_id}", **extra})


def test_late_failed_result_never_downgrades_a_command_that_ran(svc: ActuatorService) -> None:
    svc.send("gw-a", "fan", 1.0, command_id="c-1")
    svc.on_result("gw-a", _result("c-1", True, status="ok", duplicate=False))
    # the operator re-sends while the MCU is unplugged: the retry fails, the command ran
    svc.send("gw-a", "fan", 1.0, command_id="c-1")
    svc.on_result("gw-a", _result("c-1", False, status="error", error="MCU not connected"))
    got = svc.get("c-1")
    assert got["status"] == "ok" and got["result"]["ok"] is True
    # a failure followed by success is an upgrade
    svc.send("gw-a", "heater", 0.5, command_id="c-2")
    svc.on_result("gw-a", _result("c-2", False, status="error"))
    assert svc.get("c-2")["status"] == "failed"
    svc.on_result("gw-a", _result("c-2", True, status="ok"))
    assert svc.get("c-2")["status"] == "ok"


def test_a_command_id_belongs_to_one_device_and_one_action(svc: ActuatorService) -> None:
    svc.send("gw-a", "fan", 1.0, command_id="c-9")
    svc.send("gw-a", "fan", 1.0, command_id="c-9")  # idempotent re-send: fine
    with pytest.raises(CommandIdConflict, match="already used"):
        svc.send("gw-b", "fan", 1.0, command_id="c-9")
    with pytest.raises(CommandIdConflict):
        svc.send("gw-a", "fan", 0.2, command_id="c-9")
    assert svc.get("c-9")["device_id"] == "gw-a"
    sent = [t for t, _ in svc.bus.published if "/down/" in t or t.endswith("actuator")]  # type: ignore[union-attr]
    assert len(sent) == 2  # the refused ones never reached a gateway


def test_results_for_unknown_commands_are_kept_and_listed(svc: ActuatorService) -> None:
    svc.send("gw-a", "fan", 1.0, command_id="c-5")
    svc.on_result("gw-b", _result("c-5", True))  # another gateway claims c-5
    svc.on_result("gw-b", _result("never-sent", False, error="boom"))
    assert svc.get("c-5")["status"] == "sent"  # not gw-b's to settle
    rows = svc.unmatched()
    assert [(r["device_id"], r["command_id"]) for r in rows] == [
        ("gw-b", "never-sent"), ("gw-b", "c-5"),
    ]  # fmt: skip
    assert rows[0]["result"]["error"] == "boom"
    assert svc.unmatched(device_id="gw-a") == []
    # still acknowledged, or the gateway's outbox would resend them forever
    acks = [orjson.loads(p) for t, p in svc.bus.published if t.endswith("ack")]  # type: ignore[union-attr]
    assert {"keys": ["k/never-sent"]} in acks


def test_operator_api_409_on_reused_id_and_lists_unmatched_results(
    control_plane, mqtt_port
) -> None:
    """Through the real control plane: HTTP for the operator, MQTT for the gateway."""
    import uuid

    import paho.mqtt.client as mqtt

    from farmiq import topics
    from tests.support.mqtt import wait_until

    gw_a, gw_b = f"gw-act-{uuid.uuid4().hex[:8]}", f"gw-act-{uuid.uuid4().hex[:8]}"
    cid = f"cmd-{uuid.uuid4().hex[:8]}"
    with control_plane.client() as c:
        body = {"device_id": gw_a, "actuator": "fan", "value": 1.0, "command_id": cid}
        assert c.post("/api/v1/actuators", json=body).status_code == 200
        assert c.post("/api/v1/actuators", json=body).status_code == 200  # idempotent re-send
        r = c.post("/api/v1/actuators", json={**body, "device_id": gw_b})
        assert r.status_code == 409 and "already used" in r.text
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{gw_b}")
        pub.connect("127.0.0.1", mqtt_port)
        pub.loop_start()
        try:
            stray = orjson.dumps({"command_id": "never-sent-" + cid, "ok": True, "key": "k1"})
            pub.publish(topics.up(gw_b, topics.ACTUATOR_RESULT), stray, qos=1).wait_for_publish(10)
            wait_until(
                lambda: any(
                    r["command_id"] == "never-sent-" + cid
                    for r in c.get(
                        "/api/v1/actuators/unmatched", params={"device_id": gw_b}
                    ).json()["results"]
                ),
                timeout=20,
                what="the unmatched result listed",
            )
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert c.get(f"/api/v1/actuators/{cid}").json()["device_id"] == gw_a
