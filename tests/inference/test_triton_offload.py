"""Offload to a real tritonserver (nvidia-pytriton's binary, python backend running
onnxruntime): equal answers, the cascade, the cloud-inference API, and an outage."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from edge_agent.inference.breaker import CLOSED, OPEN
from edge_agent.inference.router import Router
from edge_agent.inference.targets.triton_target import TritonTarget
from edge_agent.models.serving import ModelSet
from tests.inference.conftest import make_model


def _router(model, url: str, **kw) -> Router:  # type: ignore[no-untyped-def]
    ms = ModelSet()
    ms.swap(model)
    return Router(ms, remotes={"cloud": TritonTarget(url, name="cloud")}, **kw)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_offload_answers_equal_local(triton, barn_model, proto):
    m = make_model(barn_model.onnx_bytes, targets=["cloud", "edge"])
    url = triton.server.http_url if proto == "http" else triton.server.grpc_url
    r = _router(m, url, remote_timeout_ms=5000)
    rows = barn_model.X_test[:24]

    async def go():  # type: ignore[no-untyped-def]
        res = await r.infer("barn", rows.tolist())
        await r.close()
        return res

    res = asyncio.run(go())
    local = m.run({"X": rows})
    assert res.target == "cloud" and res.version == 1, res.reason
    assert res.outputs["label"].tolist() == local["label"].tolist()
    np.testing.assert_allclose(
        res.outputs["probabilities"], local["probabilities"], rtol=1e-5, atol=1e-7
    )


def test_cascade_escalates_only_unsure_rows_to_triton(triton, barn_model):
    m = make_model(barn_model.onnx_bytes, confidence_threshold=0.6)
    r = _router(m, triton.server.http_url, remote_timeout_ms=5000)
    rows = barn_model.X_test[:32]

    async def go():  # type: ignore[no-untyped-def]
        res = await r.infer("barn", rows.tolist())
        await r.close()
        return res

    res = asyncio.run(go())
    unsure = sum(c < 0.6 for c in res.confidence or [])
    assert unsure > 0, "fixture rows should include some unsure ones"
    assert res.target == "edge+cloud" and res.escalated_rows == unsure
    assert not res.low_confidence
    # the cloud runs the same model here, so the merged answer equals the local one
    assert res.outputs["label"].tolist() == m.run({"X": rows})["label"].tolist()


def test_cloud_inference_api_lists_models_stats_and_warms_up(triton):
    from control_plane.api.cloud_inference import router

    app = FastAPI()
    app.include_router(router)
    app.state.ctx = SimpleNamespace(services={"cloud_inference": triton.publisher})
    with TestClient(app) as c:
        models = c.get("/api/v1/cloud/models").json()["models"]
        assert {"name": "barn", "version": "1", "state": "READY", "reason": None} in models
        assert c.get("/api/v1/cloud/status").json()["ready"] is True
        w = c.post("/api/v1/cloud/models/barn/warmup", json={"runs": 2})
        assert w.status_code == 200 and len(w.json()["latency_ms"]) == 2
        info = c.get("/api/v1/cloud/models/barn").json()
        assert info["ready"] is True and info["config"]["max_batch_size"] == 64
        assert info["config"]["dynamic_batching"]["max_queue_delay_microseconds"] == 2000
        stats = c.get("/api/v1/cloud/models/barn/stats").json()["statistics"]
        assert stats[0]["inference_count"] >= 2
        assert c.get("/api/v1/cloud/models/nope").status_code == 404
    app.state.ctx = SimpleNamespace(services={})
    with TestClient(app) as c:
        r = c.get("/api/v1/cloud/models")
        assert r.status_code == 503 and "triton_url" in r.json()["detail"]


def test_promotion_hook_publishes_a_new_version(triton, barn_model):
    from control_plane.triton.publisher import TritonPublisher

    registry = SimpleNamespace(model_bytes=lambda name, version: barn_model.onnx_bytes)
    pub = TritonPublisher(
        triton.server.http_url, triton.repo, variant="python", kind="KIND_CPU", registry=registry
    )
    pub.on_promoted("barn", 2)
    assert pub.last_error is None
    assert pub.ready("barn", 2) and pub.ready(
        "barn", 1
    )  # older versions stay for gateways mid-rollout
    dead = TritonPublisher("http://127.0.0.1:9", triton.repo, variant="python", registry=registry)
    dead.on_promoted("barn", 3)  # an outage never fails a promotion...
    assert dead.last_error and "unreachable" in dead.last_error  # ...it is remembered


def test_killing_triton_falls_back_in_budget_opens_and_restart_closes_breaker(triton, barn_model):
    m = make_model(barn_model.onnx_bytes, targets=["cloud", "edge"])
    r = _router(
        m, triton.server.http_url, remote_timeout_ms=300, breaker_failures=2, breaker_reset_s=0.5
    )
    row = barn_model.X_test[:4].tolist()
    budget = 400.0

    async def run(n: int) -> list:  # type: ignore[type-arg]
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            res = await r.infer("barn", row, budget_ms=budget)
            out.append((res, (time.perf_counter() - t0) * 1000))
        return out

    async def go():  # type: ignore[no-untyped-def]
        before = await run(3)
        triton.server.kill()
        during = await run(5)
        assert r.breakers["cloud"].state == OPEN
        triton.server.load = ["barn"]
        await asyncio.to_thread(triton.server.start, 60)
        await asyncio.sleep(0.6)  # past the reset timeout: the next request probes
        after = await run(3)
        await r.close()
        return before, during, after

    before, during, after = asyncio.run(go())
    assert all(res.target == "cloud" for res, _ in before)
    assert all(res.target == "edge" for res, _ in during)
    assert all(ms < budget for _, ms in during), [ms for _, ms in during]
    assert "fell back to edge" in during[0][0].reason
    assert "circuit breaker open" in during[-1][0].reason
    assert r.breakers["cloud"].state == CLOSED
    assert all(res.target == "cloud" for res, _ in after)
    assert httpx.get(f"{triton.server.http_url}/v2/models/barn/ready").status_code == 200


def test_publishing_sends_the_files_in_the_load_request_no_shared_volume(triton, barn_model):
    """The control plane keeps no repository Triton reads: the model travels in the
    repository API's load request, and the older versions stay loaded."""
    from control_plane.triton.publisher import TritonPublisher

    registry = SimpleNamespace(model_bytes=lambda name, version: barn_model.onnx_bytes)
    pub = TritonPublisher(
        triton.server.http_url, variant="python", kind="KIND_CPU", registry=registry
    )
    assert not (triton.repo / "barn-remote").exists()
    pub.publish_bytes("barn-remote", 1, barn_model.onnx_bytes)
    pub.on_promoted("barn-remote", 2)
    assert pub.last_error is None
    assert pub.ready("barn-remote", 1) and pub.ready("barn-remote", 2)
    assert not (triton.repo / "barn-remote").exists()  # nothing was written for Triton to read
    # A second replica (no memory of v1, v2) keeps what Triton serves and adds v3.
    other = TritonPublisher(
        triton.server.http_url, variant="python", kind="KIND_CPU", registry=registry
    )
    other.on_promoted("barn-remote", 3)
    assert [other.ready("barn-remote", v) for v in (1, 2, 3)] == [True, True, True]
