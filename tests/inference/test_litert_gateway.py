"""A gateway that serves only a LiteRT model: a real ``farmiq agent run`` with one signed
``litert`` bundle answers as the LiteRT interpreter does, and never loads ONNX Runtime
(about 20 MB resident for good), whatever an operator asks of its API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.installer import Installer
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import ModelSet
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot

pytest.importorskip("ai_edge_litert")

TFLITE = Path(__file__).parents[2] / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"
MODEL = "vent-needed"
ROWS = [[31.0, 80.0, 22.0, 2.5], [18.0, 50.0, 3.0, 0.6], [26.0, 70.0, 12.0, 1.4]]


def _interpreter_answers(rows: list[list[float]]) -> np.ndarray:
    """The fixture's int8 interpreter, quantised by hand as its docstring says."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(TFLITE))
    it.allocate_tensors()
    (i,), (o,) = it.get_input_details(), it.get_output_details()
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    out = []
    for row in rows:
        q = np.clip(np.round(np.asarray([row], np.float32) / si + zi), -128, 127)
        it.set_tensor(i["index"], q.astype(np.int8))
        it.invoke()
        out.append((it.get_tensor(o["index"]).astype(np.float32) - zo) * so)
    return np.concatenate(out)


def test_a_litert_gateway_answers_as_litert_and_never_loads_onnx_runtime(
    tmp_path: Path, agent_factory, device_id
):  # type: ignore[no-untyped-def]
    signer = Signer.generate()
    trust = tmp_path / "trust.json"
    TrustRoot.for_signers([signer]).save(trust)
    a = agent_factory(device_id, trust, start=False)
    bundle = build_bundle(TFLITE.read_bytes(), name=MODEL, version=1, signers=[signer],
                          runtime="litert", labels=["no", "yes"])  # fmt: skip
    inst = Installer(ModelStore(a.state_dir), ModelSet(), TrustRoot.load(trust), device_id=device_id,
                     hardware_class="generic-linux", max_bundle_bytes=64 << 20)  # fmt: skip
    assert inst.install(bundle).ok
    a.start()

    r = a.post("/api/v1/inference", {"model": MODEL, "inputs": ROWS})
    assert r.status_code == 200, r.text
    body = r.json()
    want = _interpreter_answers(ROWS)
    # the manifest names the model's outputs by its serving signature (output_0)
    np.testing.assert_allclose(np.asarray(body["outputs"]["output_0"]), want, atol=1e-6)
    assert want.argmax(axis=1).tolist() == [1, 0, 1]  # rows that mean something: hot, cool, warm
    assert body["target"] == "edge" and body["version"] == 1

    # what an operator and the fleet ask of a gateway: none of it may pull ONNX Runtime in
    for path in ("/api/v1/models", f"/api/v1/models/{MODEL}", f"/v2/models/{MODEL}",
                 "/api/v1/resources/status", "/metrics", "/openapi.json"):  # fmt: skip
        assert a.get(path).status_code == 200, path
    res = a.get("/api/v1/resources/status").json()
    assert res["gpu"]["onnxruntime_providers"] is None and MODEL in res["queues"]
    maps = Path(f"/proc/{a.proc.pid}/maps").read_text()
    assert "litert" in maps and "onnxruntime" not in maps


def test_a_gateway_without_onnx_runtime_refuses_onnx_bundles_and_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, barn_model
):  # type: ignore[no-untyped-def]
    """`edge-core` + `edge-litert`: ONNX Runtime is not installed. An ONNX bundle is refused
    before it is staged, saying what to install; the LiteRT model keeps serving."""
    import sys

    signer = Signer.generate()
    models = ModelSet()
    inst = Installer(ModelStore(tmp_path), models, TrustRoot.for_signers([signer]),
                     device_id="gw", hardware_class="generic-linux", max_bundle_bytes=64 << 20)  # fmt: skip
    lite = build_bundle(TFLITE.read_bytes(), name=MODEL, version=1, signers=[signer],
                        runtime="litert")  # fmt: skip
    assert inst.install(lite).ok
    onnx = build_bundle(barn_model.onnx_bytes, name=MODEL, version=2, signers=[signer])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # on this gateway: never installed
    res = inst.install(onnx)
    assert not res.ok and res.code == "incompatible"
    assert "pip install 'farmiq-edge[edge]'" in res.reason
    serving = models.get(MODEL)
    assert serving is not None and serving.version == 1 and serving.runtime.kind == "litert"
    assert not list((tmp_path / "staging").iterdir())  # nothing staged
