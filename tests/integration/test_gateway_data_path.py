"""The gateway's data path through the real daemon: drift windows and label feedback reach
the control plane through the durable outbox; MCU readings feed the feature cache that
entity-keyed inference reads; actuator commands reach the MCU once and report back."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from farmiq import topics
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from farmiq.director.envelope import seal
from farmiq.features import BARN_SCHEMA
from farmiq_sim.mcu.simulator import MCUSimulator
from tests.support.mqtt import publish, wait_until

MODEL = "barn-drift"


@pytest.fixture(scope="module")
def drift_model(control_plane, barn_model):
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={
                "file": ("m.onnx", barn_model.onnx_bytes),
                "reference": ("ref.json", json.dumps(barn_model.reference)),
            },
            data={"name": MODEL, "meta": json.dumps({"labels": ["off", "low", "high"]})},
        )
        assert r.status_code == 200, r.text
        v = r.json()["version"]
        assert c.put(f"/api/v1/models/{MODEL}/promote", json={"version": v}).status_code == 200
    return v


def test_drift_windows_and_feedback_reach_the_control_plane(
    control_plane, drift_model, agent_factory, device_id, barn_model
):
    agent = agent_factory(device_id, control_plane.trust_root(), drift={"window_s": 1.0})
    with control_plane.client() as c:
        dep = c.post("/api/v1/deployments", json={"model": MODEL, "devices": [device_id]}).json()
        wait_until(
            lambda: (
                c.get(f"/api/v1/deployments/{dep['id']}").json()["devices"][device_id]["status"]
                == "installed"
            ),
            what="install",
        )
    from farmiq_sim.barn_model import synthetic_barn

    hot, _ = synthetic_barn(400, seed=9, shift=2.5)  # a much hotter, dirtier barn
    for i in range(0, 400, 50):
        r = agent.post(
            "/api/v1/inference",
            {"model": MODEL, "inputs": hot[i : i + 50].tolist(), "cache": False},
        )
        assert r.status_code == 200, r.text

    def fleet_status():
        with control_plane.client() as c:
            rows = c.get("/api/v1/drift/models").json()
        row = next((m for m in rows if m["model"] == MODEL), None)
        return row if row and row.get("windows") and row["status"] == "drift" else None

    row = wait_until(fleet_status, 45, "the shift flagged as drift at the control plane")
    assert row["status"] == "drift", row  # the shift is flagged fleet-wide

    # label feedback: a run of wrong predictions trips the concept-drift detector
    items = [{"prediction": 0, "truth": 0} for _ in range(400)] + [
        {"prediction": 0, "truth": 2} for _ in range(300)
    ]
    r = agent.post("/api/v1/feedback", {"model": MODEL, "kind": "classification", "items": items})
    assert r.status_code == 200, r.text
    states = [c["state"] for c in r.json()["changes"]]
    assert "drift" in states
    bad = agent.post("/api/v1/feedback", {"model": MODEL})
    assert bad.status_code == 400


def _barn_feature_model() -> bytes:
    """A model over the barn feature schema: outputs the features it was given, so the
    test sees exactly the vector the gateway assembled."""
    n = len(BARN_SCHEMA.features)
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n])
    y = helper.make_tensor_value_info("echo", TensorProto.FLOAT, [None, n])
    g = helper.make_graph([helper.make_node("Identity", ["features"], ["echo"])], "echo", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


async def test_mcu_readings_feed_entity_inference_and_actuators_run_once(
    control_plane, agent_factory, device_id, mqtt_port, tmp_path
):
    sim = MCUSimulator("mcu-barn-1", reading_interval=0.05, link_path=str(tmp_path / "mcu"))
    path = await sim.start()
    try:
        agent = await asyncio.to_thread(
            agent_factory, device_id, control_plane.trust_root(), mcu_ports=[path], barn_id="barn-7"
        )
        await asyncio.to_thread(agent.wait_subscribed)  # before pushing to down/...
        signer = Signer.load(control_plane.data_dir / "keys" / "bundle-signing.pem")
        bundle = build_bundle(
            _barn_feature_model(),
            name="barn-echo",
            version=1,
            signers=[signer],
            task="regression",
            feature_schema=(BARN_SCHEMA.name, BARN_SCHEMA.version),
            feature_names=list(BARN_SCHEMA.features),
        )
        await asyncio.to_thread(publish, mqtt_port, topics.down(device_id, topics.BUNDLE), bundle)
        cloud = {
            "kind": "farmiq-features/1",
            "views": {
                "flock_profile": [
                    {
                        "entity_id": "flock-3",
                        "event_ts": time.time(),
                        "values": {"flock_age_days": 21, "breed": "cobb_500"},
                    }
                ]
            },
        }
        # cloud features must come from the control plane's director (docs/security.md)
        director = Signer.load(control_plane.data_dir / "keys" / "director.pem")
        sealed = seal(
            [director], leaf=topics.FEATURES, device=device_id,
            counter=time.time_ns() // 1000, body=json.dumps(cloud).encode(),
        )  # fmt: skip
        await asyncio.to_thread(publish, mqtt_port, topics.down(device_id, topics.FEATURES), sealed)

        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as c:
            body = {"model": "barn-echo", "entity": {"barn_id": "barn-7", "flock_id": "flock-3"}}
            deadline = time.time() + 60
            while True:
                r = await c.post("/api/v1/inference", json=body)
                if r.status_code == 200 or time.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 200, r.text
            vec = np.asarray(r.json()["outputs"]["echo"][0])
            names = list(BARN_SCHEMA.features)
            temp = vec[names.index("barn_climate_1h:temperature_mean_1h")]
            assert 5 < temp < 45  # a believable barn temperature, read from the MCU
            assert vec[names.index("flock_profile:flock_age_days")] == 21
            assert r.json()["feature_flags"][names.index("flock_profile:flock_age_days")] == "ok"

            # an entity the cache has never seen: a clear error, not garbage
            r = await c.post(
                "/api/v1/inference",
                json={"model": "barn-echo", "entity": {"barn_id": "nope", "flock_id": "x"}},
            )
            assert r.status_code in (409, 422), r.text

        # actuator: through the control plane, to the MCU, result back through the outbox
        async with httpx.AsyncClient(base_url=control_plane.url, timeout=10) as cp:
            cmd = {
                "device_id": device_id,
                "actuator": "fan",
                "value": 0.8,
                "command_id": f"fan-{device_id}",
            }
            sent = (await cp.post("/api/v1/actuators", json=cmd)).json()
            assert sent["status"] == "sent"
            await cp.post("/api/v1/actuators", json=cmd)  # an operator double-click
            deadline = time.time() + 20
            while True:
                got = (await cp.get(f"/api/v1/actuators/{cmd['command_id']}")).json()
                if got["status"] != "sent" or time.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert got["status"] == "ok", got
            assert got["result"]["applied_value"] == pytest.approx(0.8)
            await asyncio.sleep(1.0)
        from firmware_bridge.messages import command_hash

        assert sim.executions[command_hash(cmd["command_id"])] == 1  # ran, and only once
    finally:
        await sim.stop()


def test_gateway_receives_cloud_features_for_its_flocks(control_plane, agent_factory, device_id):
    flock = f"flock-{device_id}"
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/features/records/flock_profile",
            json={
                "rows": [
                    {
                        "flock_id": flock,
                        "event_ts": time.time() - 60,
                        "flock_age_days": 17,
                        "breed": "ross_308",
                    }
                ]
            },
        )
        assert r.status_code == 200, r.text
    agent = agent_factory(device_id, control_plane.trust_root(), flock_ids=[flock])

    def age():
        items = agent.get(f"/api/v1/features?barn_id=barn-1&flock_id={flock}").json()["features"]
        item = next(i for i in items if i["feature"] == "flock_profile:flock_age_days")
        return item if item["flag"] == "ok" else None

    item = wait_until(age, 30, "flock features pushed to the gateway")
    assert item["value"] == 17
    items = agent.get(f"/api/v1/features?barn_id=barn-1&flock_id={flock}").json()["features"]
    ammonia = next(i for i in items if i["feature"] == "barn_climate_1h:ammonia_max_1h")
    assert ammonia["flag"] == "unavailable" and "no readings" in ammonia["reason"]
    assert agent.get("/api/v1/features?schema=nope").status_code == 404


async def test_mcu_sized_model_is_loaded_on_the_mcu_and_served_there(
    control_plane, agent_factory, device_id, mqtt_port, tmp_path
):
    from pathlib import Path

    from ai_edge_litert.interpreter import Interpreter

    from farmiq.bundle.format import TensorSpec

    tflite = (
        Path(__file__).resolve().parents[2] / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"
    )
    sim = MCUSimulator("mcu-vent", reading_interval=0.5, link_path=str(tmp_path / "mcu"))
    path = await sim.start()
    try:
        agent = await asyncio.to_thread(
            agent_factory, device_id, control_plane.trust_root(), mcu_ports=[path]
        )
        await asyncio.to_thread(agent.wait_subscribed)  # before pushing to down/...
        signer = Signer.load(control_plane.data_dir / "keys" / "bundle-signing.pem")
        bundle = build_bundle(
            tflite.read_bytes(),
            name="vent-mcu",
            version=1,
            signers=[signer],
            runtime="mcu-tflite",
            inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 4])],
            outputs=[TensorSpec(name="y", dtype="float32", shape=[None, 2])],
            serving={"targets": ["mcu", "edge"]},
        )
        await asyncio.to_thread(publish, mqtt_port, topics.down(device_id, topics.BUNDLE), bundle)
        row = [[31.0, 75.0, 22.0, 2.4]]  # hot, humid, ammonia: ventilate
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as c:
            deadline = time.time() + 60
            while True:
                r = await c.post(
                    "/api/v1/inference", json={"model": "vent-mcu", "inputs": row, "cache": False}
                )
                if (r.status_code == 200 and r.json()["target"] == "mcu") or time.time() > deadline:
                    break
                await asyncio.sleep(0.3)
            assert r.status_code == 200, r.text
            # The MCU's model slot is reported (resources/status; up/state carries the same).
            mcus = (await c.get("/api/v1/resources/status")).json()["links"]["mcu"]["devices"]
            assert [m["model_id"] for m in mcus[0]["models"]] == ["vent-mcu"], mcus
            assert len(mcus[0]["models"][0]["sha256"]) == 64
        body = r.json()
        assert body["target"] == "mcu", body
        interp = Interpreter(model_path=str(tflite))
        interp.allocate_tensors()
        din, dout = interp.get_input_details()[0], interp.get_output_details()[0]
        scale, zero = din["quantization"]
        q = np.clip(np.round(np.asarray(row, np.float32) / scale + zero), -128, 127).astype(np.int8)
        interp.set_tensor(din["index"], q)
        interp.invoke()
        oscale, ozero = dout["quantization"]
        want = (interp.get_tensor(dout["index"]).astype(np.float32) - ozero) * oscale
        np.testing.assert_allclose(np.asarray(body["outputs"]["y"]), want, atol=1e-6)
    finally:
        await sim.stop()
