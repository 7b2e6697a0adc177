"""The agent's local API speaks KServe v2 (tritonclient talks to it as to Triton), publishes
its OpenAPI document, and schemathesis finds no server error in it. Also issue 18's two
API defects: a 5,000-deep feedback body is a 400, and warmup honours {"model": ...}."""

from __future__ import annotations

import os
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


@pytest.fixture
def agent(tmp_path: Path, agent_factory, device_id, signer, barn_model):  # type: ignore[no-untyped-def]
    trust_path = tmp_path / "trust.json"
    TrustRoot.for_signers([signer]).save(trust_path)
    a = agent_factory(device_id, trust_path, start=False)
    inst = Installer(ModelStore(a.state_dir), ModelSet(), TrustRoot.load(trust_path), device_id=device_id,
                     hardware_class="generic-linux", max_bundle_bytes=64 << 20)  # fmt: skip
    bundle = build_bundle(barn_model.onnx_bytes, name=MODEL, version=1, signers=[signer],
                          labels=["off", "low", "high"], serving={"max_batch": 16})  # fmt: skip
    assert inst.install(bundle).ok
    a.start()
    return a


def test_tritonclient_talks_to_the_gateway_as_to_triton(agent, barn_model):  # type: ignore[no-untyped-def]
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(agent.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"][0]["name"] == "X" and meta["inputs"][0]["datatype"] == "FP32"
    rows = np.ascontiguousarray(barn_model.X_test[:8], dtype=np.float32)
    sess = ort.InferenceSession(barn_model.onnx_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"X": rows})
    for binary in (True, False):  # the binary tensor extension, and plain JSON
        x = httpclient.InferInput("X", list(rows.shape), "FP32")
        x.set_data_from_numpy(rows, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                for n in ("label", "probabilities")]  # fmt: skip
        res = client.infer(MODEL, [x], outputs=outs)
        assert res.as_numpy("label").tolist() == label.tolist()
        np.testing.assert_allclose(res.as_numpy("probabilities"), proba, rtol=1e-6)
    res = client.infer(MODEL, [x])  # no outputs named: all of them, binary
    assert res.as_numpy("label").tolist() == label.tolist()
    # the same router: the answers are counted with the /api/v1 ones
    assert agent.get("/api/v1/metrics").json()["models"][MODEL]["requests"]["count"] >= 3
    client.close()


def test_openapi_document_and_schemathesis_finds_no_server_error(agent, tmp_path):  # type: ignore[no-untyped-def]
    doc = agent.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/v2/models/{name}/infer" in doc["paths"]
    st = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [str(st), "run", f"{agent.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "8", "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert agent.get("/health").status_code == 200  # still serving


def test_deep_feedback_is_400_and_warmup_honours_model(agent):  # type: ignore[no-untyped-def]
    import httpx

    deep = "[" * 5000 + "]" * 5000
    r = httpx.post(f"{agent.url}/api/v1/feedback", content=deep, timeout=10)
    assert r.status_code == 400, r.text
    warmed = agent.post("/api/v1/models/warmup", {"model": MODEL}).json()["warmed"]
    assert list(warmed) == [MODEL]
    missing = agent.post("/api/v1/models/warmup", {"model": "no-such-model"})
    assert missing.status_code == 404
