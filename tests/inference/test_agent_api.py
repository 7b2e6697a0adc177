"""The agent's local inference API on a real agent process (model pre-installed from a
signed bundle, as after a rollout), and ``farmiq bundle export-triton``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.models.installer import Installer
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import ModelSet
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot

MODEL = "barn-ventilation"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


def _bundle(signer: Signer, model_bytes: bytes, version: int = 1, **serving) -> bytes:  # type: ignore[no-untyped-def]
    return build_bundle(model_bytes, name=MODEL, version=version, signers=[signer],
                        labels=["off", "low", "high"], serving=serving or None)  # fmt: skip


@pytest.fixture
def agent(tmp_path: Path, agent_factory, device_id, signer, barn_model):  # type: ignore[no-untyped-def]
    trust_path = tmp_path / "trust.json"
    TrustRoot.for_signers([signer]).save(trust_path)
    a = agent_factory(device_id, trust_path, start=False, inference={"cache_size": 256})
    inst = Installer(ModelStore(a.state_dir), ModelSet(), TrustRoot.load(trust_path), device_id=device_id,
                     hardware_class="generic-linux", max_bundle_bytes=64 << 20)  # fmt: skip
    assert inst.install(_bundle(signer, barn_model.onnx_bytes, max_batch=16)).ok
    a.start()
    return a


def test_inference_api_answers_and_explains(agent, barn_model):
    rows = barn_model.X_test[:8]
    r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": rows.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    sess = ort.InferenceSession(barn_model.onnx_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"X": rows})
    assert body["outputs"]["label"] == label.tolist()
    np.testing.assert_allclose(np.asarray(body["outputs"]["probabilities"]), proba, rtol=1e-6)
    assert (
        body["target"] == "edge"
        and body["version"] == 1
        and body["latency_ms"] > 0
        and body["reason"]
    )

    again = agent.post("/api/v1/inference", {"model": MODEL, "inputs": rows.tolist()}).json()
    assert again["target"] == "cache" and again["cached"] is True

    batch = agent.post("/api/v1/inference/batch", {"requests": [
        {"model": MODEL, "inputs": rows[:2].tolist()},
        {"model": "nope", "inputs": rows[:1].tolist()},
        {"model": MODEL, "inputs": [[1, 2, 3]]},
    ]}).json()  # fmt: skip
    assert batch["ok"] == 1 and batch["failed"] == 2
    assert [x["status"] for x in batch["results"]] == [200, 404, 422]

    m = agent.get("/api/v1/metrics").json()
    stats = m["models"][MODEL]
    assert stats["cache"]["hits"] >= 1 and stats["cache"]["hit_rate"] > 0
    assert stats["targets"]["edge"]["count"] >= 2 and stats["targets"]["edge"]["p99_ms"] is not None
    assert stats["requests"]["p50_ms"] is not None and stats["rejected"] >= 1
    assert m["breakers"] == {"mcu": m["breakers"]["mcu"]}  # no cloud configured: no cloud breaker

    cleared = agent.post("/api/v1/cache/clear", {}).json()
    assert cleared["cleared"] >= 1
    third = agent.post("/api/v1/inference", {"model": MODEL, "inputs": rows.tolist()}).json()
    assert third["target"] == "edge"


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"model": MODEL, "inputs": [[1.0, 2.0, 3.0]]}, 422, "axis 1 must be 4"),
        ({"model": MODEL, "inputs": [["x", 1, 2, 3]]}, 422, "cannot be read as float32"),
        ({"model": MODEL, "inputs": {"X": [[1.0, None, 3.0, 4.0]]}}, 422, "NaN"),
        ({"model": MODEL, "inputs": [[1.0, 2.0, 3.0, 4.0]] * 17}, 422, "exceeds the limit 16"),
        ({"model": "ghost", "inputs": [[1.0, 2.0, 3.0, 4.0]]}, 404, "unknown model 'ghost'"),
        ({"inputs": [[1.0, 2.0, 3.0, 4.0]]}, 422, "body must be"),
        (
            {"model": MODEL, "inputs": [[1, 2, 3, 4]], "latency_budget_ms": -1},
            422,
            "latency_budget_ms",
        ),
    ],
)
def test_bad_requests_get_4xx_saying_what_is_wrong(agent, body, status, needle):
    r = agent.post("/api/v1/inference", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_models_warmup_resources_and_oversized_batch(agent):
    models = agent.get("/api/v1/models").json()["models"]
    assert models[0]["name"] == MODEL and models[0]["serving"]["max_batch"] == 16
    one = agent.get(f"/api/v1/models/{MODEL}").json()
    assert one["manifest"]["name"] == MODEL and one["providers"][-1] == "CPUExecutionProvider"
    assert agent.get("/api/v1/models/ghost").status_code == 404

    w = agent.post("/api/v1/models/warmup", {"models": [MODEL], "runs": 2}).json()["warmed"][MODEL]
    assert w["path"] == "inline" and w["single_row_us"] > 0
    assert agent.post("/api/v1/models/warmup", {"models": ["ghost"]}).status_code == 404

    res = agent.get("/api/v1/resources/status").json()
    assert res["cpu"]["count"] >= 1 and res["memory"]["total_mb"] > 0
    assert "onnxruntime_providers" in res["gpu"] and MODEL in res["queues"]
    assert res["links"]["mcu"]["configured"] is False

    too_many = {"requests": [{"model": MODEL, "inputs": [[1, 2, 3, 4]]}] * 257}
    r = agent.post("/api/v1/inference/batch", too_many)
    assert r.status_code == 413 and "exceeds the limit 256" in r.json()["error"]


def test_export_triton_cli_writes_a_repository(tmp_path: Path, signer, barn_model):
    bundle = tmp_path / "b.fqb"
    bundle.write_bytes(
        _bundle(signer, barn_model.onnx_bytes, version=3, max_batch=32, max_delay_ms=4, fp16=True)
    )
    repo = tmp_path / "repo"
    out = subprocess.run([sys.executable, "-m", "farmiq", "bundle", "export-triton", str(bundle), "-o", str(repo),
                          "--instances", "2"], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = (repo / MODEL / "config.pbtxt").read_text()
    assert (repo / MODEL / "3" / "model.onnx").read_bytes() == barn_model.onnx_bytes
    for needle in ('platform: "onnxruntime_onnx"', "max_batch_size: 32", "max_queue_delay_microseconds: 4000",
                   "count: 2", "kind: KIND_GPU", 'value: "FP16"', "model_warmup", "zero_data: true",
                   "reshape: { shape: [ ] }"):  # fmt: skip
        assert needle in cfg, needle
    bad = subprocess.run([sys.executable, "-m", "farmiq", "bundle", "export-triton", str(tmp_path / "missing.fqb"),
                          "-o", str(repo)], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and "cannot export" in bad.stderr
