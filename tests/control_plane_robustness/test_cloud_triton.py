"""The cloud Triton path on a real tritonserver (the pytriton wheel's, python backend):
requests log no traceback, and the cloud routes answer 404, not 500, for an unknown model
or version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.procs import ControlPlaneProc


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from farmiq_sim.triton_server import TritonServer

    work = tmp_path_factory.mktemp("triton")
    server = TritonServer(work / "repo", work / "run", explicit=True)
    try:
        server.start(timeout=90)
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"tritonserver (nvidia-pytriton) unavailable: {exc}")
    yield server
    server.stop()


def test_python_variant_requests_log_no_traceback(triton_server: Any, barn_model: Any) -> None:
    import tritonclient.http as th

    from control_plane.triton.publisher import TritonPublisher

    pub = TritonPublisher(
        triton_server.http_url, triton_server.repository, variant="python", kind="KIND_CPU"
    )
    pub.publish_bytes("barn-python", 1, barn_model.onnx_bytes)
    client = th.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    meta = client.get_model_metadata("barn-python")
    x = np.asarray(barn_model.X_test[:4], dtype=np.float32)
    for _ in range(3):
        inp = th.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("barn-python", [inp])
        probs = out.as_numpy(meta["outputs"][-1]["name"])
        assert probs is not None and probs.shape[0] == 4
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)  # real answers, not garbage
    client.close()
    log = triton_server.log_text()
    assert "Traceback" not in log and "PyCapsule" not in log, log[-3000:]


def test_cloud_routes_answer_404_for_unknown_models_and_versions(
    triton_server: Any, tmp_path: Path, mqtt_port: int, barn_model: Any
) -> None:
    cp = ControlPlaneProc(
        tmp_path / "cp",
        mqtt_port,
        triton_url=triton_server.http_url,
        triton_repository=str(triton_server.repository),
    )
    cp.start()
    try:
        with cp.client() as c:
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("model.onnx", barn_model.onnx_bytes)},
                data={"name": "cloud-known", "meta": json.dumps({"task": "classification"})},
            )
            assert r.status_code == 200, r.text
            answers = {
                "stats": c.get("/api/v1/cloud/models/no-such-model/stats"),
                "warmup": c.post("/api/v1/cloud/models/no-such-model/warmup", json={"runs": 1}),
                "publish model": c.post(
                    "/api/v1/cloud/models/no-such-model/publish", json={"version": 1}
                ),
                "publish version": c.post(
                    "/api/v1/cloud/models/cloud-known/publish", json={"version": 99}
                ),
            }
    finally:
        cp.stop()
    for what, r in answers.items():
        assert r.status_code == 404, f"{what}: {r.status_code} {r.text}"
        assert r.json()["detail"], what
