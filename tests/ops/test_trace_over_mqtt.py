"""One trace from an operator's request to the MCU, through a real Mosquitto (issue 16,
item 2): both daemons speak MQTT 5 and carry the W3C traceparent in user properties.

A control plane and a gateway with an MCU simulator send their spans to a receiver in this
test (the real OTLP/HTTP exporters; decoded with opentelemetry-proto). An actuator command
posted with a traceparent is handled on the gateway in a span of that trace, and its MCU
exchange is a child of it. A rollout keeps its creator's trace: the scheduler's step, the
gateway's handling of the signed desired state, the control plane's answer to the
gateway's chunk request and the gateway's handling of the chunks are all in it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from farmiq_sim.mcu.simulator import MCUSimulator
from tests.ops.test_control_plane_tracing import OtlpReceiver, receiver
from tests.support.procs import ENV, AgentProc, ControlPlaneProc

__all__ = ["receiver"]

MODEL = "traced-over-mqtt"


def _in_trace(receiver: OtlpReceiver, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The first span of each name in the trace, once all of them have arrived."""
    receiver.wait_for(
        lambda s: names <= {x["name"] for x in receiver.spans if x["trace_id"] == trace_id}, 60
    )
    out: dict[str, dict[str, Any]] = {}
    for s in receiver.spans:
        if s["trace_id"] == trace_id:
            out.setdefault(s["name"], s)
    return out


async def test_one_trace_from_the_operator_through_the_broker_to_the_mcu(
    tmp_path: Path,
    mqtt_port: int,
    receiver: OtlpReceiver,
    agent_factory: Callable[..., AgentProc],
    device_id: str,
    barn_model: Any,
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port)
    cp.env = {**ENV, **otel, "OTEL_SERVICE_NAME": "cp-over-mqtt"}
    await asyncio.to_thread(cp.start)
    sim = MCUSimulator("mcu-traced", reading_interval=0.5, link_path=str(tmp_path / "mcu"))
    path = await sim.start()
    try:
        agent = agent_factory(device_id, cp.trust_root(), start=False, mcu_ports=[path])
        agent.env = {**ENV, **otel, "OTEL_SERVICE_NAME": "gw-over-mqtt"}
        await asyncio.to_thread(agent.start)
        await asyncio.to_thread(
            agent.wait_for,
            lambda s: s["broker_connected"] and s["state"].get("mcus"),
            30,
            "MCU + broker",
        )
        async with httpx.AsyncClient(base_url=cp.url, timeout=60) as c:
            # -- an operator's command, to the MCU -------------------------------------------
            trace = uuid.uuid4().hex
            cmd = {"device_id": device_id, "actuator": "fan", "value": 0.6,
                   "command_id": f"fan-{uuid.uuid4().hex[:8]}"}  # fmt: skip
            r = await c.post(
                "/api/v1/actuators", json=cmd, headers={"traceparent": f"00-{trace}-{'1' * 16}-01"}
            )
            assert r.status_code == 200, r.text
            spans = await asyncio.to_thread(
                _in_trace, receiver, trace,
                {"POST /api/v1/actuators", "mqtt.receive actuator", "mcu.command"},
            )  # fmt: skip
            api, got, mcu = (
                spans["POST /api/v1/actuators"], spans["mqtt.receive actuator"], spans["mcu.command"]
            )  # fmt: skip
            assert api["service"] == "cp-over-mqtt" and got["service"] == "gw-over-mqtt"
            cp_ids = {s["span_id"] for s in receiver.spans if s["service"] == "cp-over-mqtt"}
            assert got["parent"] in cp_ids  # the publish inside the request is its parent
            assert got["kind"] == 5  # CONSUMER
            assert mcu["parent"] == got["span_id"]  # the serial exchange, inside the handling
            while (await c.get(f"/api/v1/actuators/{cmd['command_id']}")).json()[
                "status"
            ] == "sent":
                await asyncio.sleep(0.2)

            # -- a rollout: its steps and the gateway's install continue its creator's trace --
            r = await c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": MODEL, "meta": json.dumps({"task": "classification"})},
            )
            assert r.status_code == 200, r.text
            trace = uuid.uuid4().hex
            r = await c.post(
                "/api/v1/rollouts",
                json={"model": MODEL, "version": r.json()["version"],
                      "targeting": {"devices": [device_id]}, "soak_s": 1},
                headers={"traceparent": f"00-{trace}-{'2' * 16}-01"},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            spans = await asyncio.to_thread(
                _in_trace, receiver, trace,
                {"POST /api/v1/rollouts", "rollout.step", "mqtt.receive desired",
                 "mqtt.receive transfer", "mqtt.receive chunk"},
            )  # fmt: skip
            assert spans["rollout.step"]["service"] == "cp-over-mqtt"
            assert spans["mqtt.receive desired"]["service"] == "gw-over-mqtt"
            assert spans["mqtt.receive transfer"]["service"] == "cp-over-mqtt"
            assert spans["mqtt.receive chunk"]["service"] == "gw-over-mqtt"
        await asyncio.to_thread(
            agent.wait_for,
            lambda s: MODEL in s["state"]["models"], 60, "the install",
        )  # fmt: skip
    finally:
        await sim.stop()
        await asyncio.to_thread(cp.stop)
