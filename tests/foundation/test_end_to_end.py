"""The walking skeleton, end to end on real parts: MLflow registry, signed bundle, real
Mosquitto, a real agent process, ONNX Runtime."""

from __future__ import annotations

import io
import json
import tarfile
import time
import tomllib

import numpy as np
import onnxruntime as ort
import pytest

from farmiq import topics
from farmiq.bundle.builder import build_bundle, read_container
from farmiq.bundle.format import pack
from farmiq.bundle.signing import Signer
from farmiq.config import dump_toml
from tests.support.mqtt import publish

MODEL = "barn-ventilation"


@pytest.fixture(scope="module")
def registered(control_plane, barn_model):
    meta = {
        "task": "classification",
        "labels": ["off", "low", "high"],
        "feature_names": ["temperature_c", "humidity_pct", "ammonia_ppm", "co2_ppm"],
    }
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", barn_model.onnx_bytes)},
            data={"name": MODEL, "meta": json.dumps(meta)},
        )
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        r = c.put(f"/api/v1/models/{MODEL}/promote", json={"version": version})
        assert r.status_code == 200, r.text
        assert "production" in r.json()["aliases"]
    return version


def _deploy(control_plane, device_id: str) -> dict:
    with control_plane.client() as c:
        r = c.post("/api/v1/deployments", json={"model": MODEL, "devices": [device_id]})
        assert r.status_code == 200, r.text
        dep_id = r.json()["id"]
        deadline = time.time() + 30
        while time.time() < deadline:
            dev = c.get(f"/api/v1/deployments/{dep_id}").json()["devices"][device_id]
            if dev["status"] != "sent":
                return dev
            time.sleep(0.1)
    raise AssertionError("deployment never acknowledged")


def test_register_promote_rollout_infer_equals_onnxruntime(
    control_plane, registered, agent_factory, device_id, barn_model
):
    agent = agent_factory(device_id, control_plane.trust_root())
    assert agent.get("/ready").status_code == 503  # nothing installed yet

    dev = _deploy(control_plane, device_id)
    assert dev["status"] == "installed", dev
    assert agent.get("/ready").status_code == 200

    rows = barn_model.X_test[:32]
    r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": rows.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    sess = ort.InferenceSession(barn_model.onnx_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {sess.get_inputs()[0].name: rows})
    assert body["outputs"]["label"] == label.tolist()
    np.testing.assert_allclose(np.asarray(body["outputs"]["probabilities"]), proba, rtol=1e-6)
    assert body["target"] == "edge" and body["version"] == registered

    # the control plane saw the gateway's reported state
    with control_plane.client() as c:
        prod = c.get("/api/v1/models/production").json()["models"]
        assert any(m["name"] == MODEL and m["version"] == registered for m in prod)


def _tampered(bundle: bytes) -> bytes:
    manifest, sigs, members = read_container(bundle)
    name = next(k for k in members if k.endswith(".onnx"))
    members[name] = members[name][:-1] + bytes([members[name][-1] ^ 0x01])
    return pack(manifest, sigs, members)


def _traversal(bundle: bytes) -> bytes:
    buf = io.BytesIO(bundle + b"")
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=buf, mode="r:") as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst,
    ):
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        evil = tarfile.TarInfo("../../etc/cron.d/evil")
        payload = b"* * * * * root true\n"
        evil.size = len(payload)
        dst.addfile(evil, io.BytesIO(payload))
    return out.getvalue()


@pytest.mark.parametrize(
    "attack,code", [("tampered", "hash"), ("unknown-key", "untrusted-key"), ("traversal", "path")]
)
def test_bad_bundles_rejected_and_previous_model_keeps_serving(
    attack, code, control_plane, registered, agent_factory, device_id, mqtt_port, barn_model
):
    agent = agent_factory(device_id, control_plane.trust_root())
    assert _deploy(control_plane, device_id)["status"] == "installed"
    # a fresh, valid-looking bundle for this device: v99, signed by a key the agent trusts
    # only in the "tampered"/"traversal" cases
    trusted = Signer.load(control_plane.data_dir / "keys" / "bundle-signing.pem")
    signer = Signer.generate() if attack == "unknown-key" else trusted
    bundle = build_bundle(
        barn_model.onnx_bytes,
        name=MODEL,
        version=99,
        signers=[signer],
        targeting={"devices": [device_id]},
    )
    if attack == "tampered":
        bundle = _tampered(bundle)
    elif attack == "traversal":
        bundle = _traversal(bundle)
    publish(mqtt_port, topics.down(device_id, topics.BUNDLE), bundle)
    status = agent.wait_for(
        lambda s: s["last_install"] and s["last_install"]["code"] != "installed",
        what="the rejection",
    )
    assert status["last_install"]["ok"] is False
    assert status["last_install"]["code"] == code, status["last_install"]
    assert agent.installed_version(MODEL) == registered
    r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": barn_model.X_test[:2].tolist()})
    assert r.status_code == 200 and r.json()["version"] == registered
    assert not (agent.state_dir.parent.parent / "etc").exists()


def test_agent_restarts_serving_installed_model_without_control_plane(
    control_plane, registered, agent_factory, device_id, barn_model
):
    agent = agent_factory(device_id, control_plane.trust_root())
    assert _deploy(control_plane, device_id)["status"] == "installed"
    agent.stop()
    # Restart pointing at a broker port where nothing listens: no cloud at all.
    cfg = tomllib.loads(agent.config_path.read_text())
    cfg["mqtt"]["port"] = 9
    agent.config_path.write_text(dump_toml(cfg))
    agent.start()
    r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": barn_model.X_test[:3].tolist()})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == registered
    status = agent.get("/api/v1/status").json()
    assert status["broker_connected"] is False and status["ready"] is True


def test_bundle_for_a_newer_agent_is_refused_and_the_model_keeps_serving(
    control_plane, registered, agent_factory, device_id, mqtt_port, barn_model
):
    agent = agent_factory(device_id, control_plane.trust_root())
    assert _deploy(control_plane, device_id)["status"] == "installed"
    signer = Signer.load(control_plane.data_dir / "keys" / "bundle-signing.pem")
    bundle = build_bundle(
        barn_model.onnx_bytes, name=MODEL, version=50, signers=[signer], min_agent_version="99.0.0"
    )
    publish(mqtt_port, topics.down(device_id, topics.BUNDLE), bundle)
    status = agent.wait_for(
        lambda s: (s["last_install"] or {}).get("version") == 50, what="refusal"
    )
    assert status["last_install"]["code"] == "agent-too-old"
    assert "99.0.0" in status["last_install"]["reason"]
    assert agent.installed_version(MODEL) == registered
