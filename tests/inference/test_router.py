"""The router in-process, on real ONNX Runtime sessions: answers, cache, breaker,
cascade with the cloud unreachable, micro-batching, swaps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_agent.api.errors import status_of
from edge_agent.inference.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from edge_agent.inference.escalation_store import EscalationStore
from edge_agent.inference.result_cache import ResultCache
from edge_agent.inference.router import (
    InvalidInput,
    Router,
    UnknownModel,
    normalized_entropy_confidence,
)
from edge_agent.inference.routing_metrics import Histogram
from edge_agent.inference.targets.triton_target import TritonTarget
from edge_agent.models.serving import ModelSet
from tests.inference.conftest import make_model


def _router(*models, **kw) -> Router:  # type: ignore[no-untyped-def]
    ms = ModelSet()
    for m in models:
        ms.swap(m)
    return Router(ms, **kw)


def test_edge_answer_equals_onnxruntime_and_says_where_and_why(barn_model):
    r = _router(make_model(barn_model.onnx_bytes))
    rows = barn_model.X_test[:16]
    res = asyncio.run(r.infer("barn", rows.tolist()))
    sess = ort.InferenceSession(barn_model.onnx_bytes, providers=["CPUExecutionProvider"])
    label, proba = sess.run(None, {"X": rows})
    assert res.outputs["label"].tolist() == label.tolist()
    np.testing.assert_allclose(res.outputs["probabilities"], proba, rtol=1e-6)
    d = res.as_dict()
    assert d["target"] == "edge" and d["version"] == 1 and d["latency_ms"] > 0
    assert "edge first" in d["reason"]


@pytest.mark.parametrize(
    "inputs,needle",
    [
        ([[1.0, 2.0, 3.0]], "axis 1 must be 4"),
        ([["a", "b", "c", "d"]], "cannot be read as float32"),
        ([[1.0, float("nan"), 3.0, 4.0]], "NaN"),
        ([[1.0, 2.0, 3.0, 4.0]] * 65, "exceeds the limit 64"),
        ({"Y": [[1, 2, 3, 4]]}, "unknown input"),
    ],
)
def test_bad_inputs_are_422_with_the_reason(barn_model, inputs, needle):
    r = _router(make_model(barn_model.onnx_bytes))
    with pytest.raises(InvalidInput) as ei:
        asyncio.run(r.infer("barn", inputs))
    assert status_of(ei.value) == 422 and needle in ei.value.message


def test_unknown_model_is_404_listing_known(barn_model):
    r = _router(make_model(barn_model.onnx_bytes))
    with pytest.raises(UnknownModel) as ei:
        asyncio.run(r.infer("nope", [[1, 2, 3, 4]]))
    assert status_of(ei.value) == 404 and ei.value.extra["known"] == ["barn"]


def test_result_cache_hits_and_is_cleared_on_swap(barn_model):
    r = _router(make_model(barn_model.onnx_bytes), cache=ResultCache(128, 60))
    row = barn_model.X_test[:1].tolist()

    async def go():  # type: ignore[no-untyped-def]
        a = await r.infer("barn", row)
        b = await r.infer("barn", row)
        assert a.target == "edge" and b.target == "cache" and b.cached
        assert b.outputs["label"].tolist() == a.outputs["label"].tolist()
        assert r.cache.stats()["hit_rate"] == 0.5
        r.models.swap(make_model(barn_model.onnx_bytes, version=2))
        r.on_model_swap("barn")
        assert len(r.cache) == 0
        c = await r.infer("barn", row)
        assert c.target == "edge" and c.version == 2

    asyncio.run(go())


def test_breaker_opens_half_opens_and_closes():
    now = [0.0]
    b = CircuitBreaker(3, 2.0, clock=lambda: now[0])
    for _ in range(3):
        assert b.allow()
        b.record_failure("refused")
    assert b.state == OPEN and not b.allow()
    now[0] = 2.5
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_failure("still down")
    assert b.state == OPEN
    now[0] = 5.0
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED


def test_cloud_first_model_falls_back_to_edge_and_opens_breaker(barn_model):
    # Nothing listens on this port: every cloud call is refused at once.
    cloud = TritonTarget("http://127.0.0.1:9", name="cloud")
    r = _router(make_model(barn_model.onnx_bytes, targets=["cloud", "edge"]), remotes={"cloud": cloud},
                breaker_failures=2, breaker_reset_s=30)  # fmt: skip

    async def go():  # type: ignore[no-untyped-def]
        out = []
        for _ in range(4):
            out.append(await r.infer("barn", barn_model.X_test[:2].tolist(), budget_ms=500))
        await r.close()
        return out

    results = asyncio.run(go())
    assert all(x.target == "edge" for x in results)
    assert results[0].fallback_from == ["cloud"] and "fell back to edge" in results[0].reason
    assert r.breakers["cloud"].state == OPEN
    assert "circuit breaker open" in results[-1].reason  # no more waiting on a dead link
    assert all(x.latency_ms < 500 for x in results)


def test_low_confidence_with_cloud_down_is_flagged_and_kept(barn_model, tmp_path: Path):
    store = EscalationStore(tmp_path / "esc", max_entries=3)
    cloud = TritonTarget("http://127.0.0.1:9", name="cloud")
    # threshold 0.99: nearly every row is "unsure"
    r = _router(make_model(barn_model.onnx_bytes, confidence_threshold=0.99), remotes={"cloud": cloud},
                escalations=store, breaker_failures=1, breaker_reset_s=30)  # fmt: skip
    rows = barn_model.X_test[:8]

    async def go():  # type: ignore[no-untyped-def]
        res = [await r.infer("barn", rows[i : i + 2].tolist()) for i in range(0, 8, 2)]
        await r.flush()
        await r.close()
        return res

    results = asyncio.run(go())
    conf = normalized_entropy_confidence(results[0].outputs["probabilities"])
    assert results[0].confidence == [round(float(c), 4) for c in conf]
    flagged = [x for x in results if x.low_confidence]
    assert flagged and all(x.target == "edge" for x in flagged)
    assert "input kept" in flagged[0].reason
    assert len(store) == 3 and store.dropped >= 1  # bounded: oldest dropped
    entry = store.entries()[0]
    assert entry["model"] == "barn" and entry["version"] == 1 and entry["inputs"]["X"]


def test_confident_rows_are_not_escalated(barn_model):
    r = _router(make_model(barn_model.onnx_bytes, confidence_threshold=0.01))
    res = asyncio.run(r.infer("barn", barn_model.X_test[:4].tolist()))
    assert res.target == "edge" and not res.low_confidence and res.escalated_rows == 0


def test_normalized_entropy_bounds():
    c = normalized_entropy_confidence(np.array([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3]]))
    assert c[0] == pytest.approx(1.0) and c[1] == pytest.approx(0.0, abs=1e-9)


def test_big_model_is_micro_batched_and_answers_match(big_model):
    m = make_model(big_model.onnx_bytes, name="big", max_batch=32, max_delay_ms=5)
    r = _router(m, inline_max_us=0)  # force the batcher whatever this machine's speed
    st = r.state("big")
    assert st.batcher is not None
    rows = big_model.X_test[:64]

    async def go():  # type: ignore[no-untyped-def]
        res = await asyncio.gather(*(r.infer("big", rows[i : i + 1]) for i in range(64)))
        await r.close()
        return res

    results = asyncio.run(go())
    expect = m.run({"X": rows})
    got = np.concatenate([x.outputs["probabilities"] for x in results])
    np.testing.assert_allclose(got, expect["probabilities"], rtol=1e-5, atol=1e-6)
    assert st.batcher.batches < 64 / 4  # gathered, not one run per request
    assert r.snapshot()["models"]["big"]["batching"]["mean_batch"] > 4


def test_tiny_model_stays_inline(barn_model):
    r = _router(make_model(barn_model.onnx_bytes))
    st = r.state("barn")
    assert st.inline and st.batcher is None and st.fast


def test_swap_mid_batch_drops_nothing(big_model):
    m1 = make_model(big_model.onnx_bytes, name="big", version=1, max_batch=16, max_delay_ms=20)
    r = _router(m1, inline_max_us=0)
    rows = big_model.X_test[:40]

    async def go():  # type: ignore[no-untyped-def]
        first = [asyncio.ensure_future(r.infer("big", rows[i : i + 1])) for i in range(20)]
        await asyncio.sleep(0)
        r.models.swap(
            make_model(big_model.onnx_bytes, name="big", version=2, max_batch=16, max_delay_ms=20)
        )
        r.on_model_swap("big")
        second = [asyncio.ensure_future(r.infer("big", rows[i : i + 1])) for i in range(20, 40)]
        return await asyncio.gather(*first, *second)

    results = asyncio.run(go())
    assert len(results) == 40
    assert {x.version for x in results[:20]} == {1} and {x.version for x in results[20:]} == {2}


def test_budget_steers_away_from_a_deep_queue(big_model):
    # A fake cloud that answers fast, to see the router pick it when the edge queue is deep.
    class FastCloud:
        name, cost, cold_start_ms = "cloud", 1.0, 0.0

        def configured(self) -> bool:
            return True

        def holds(self, model: str) -> bool:
            return True

        async def infer(self, model, version, inputs, outputs, timeout_s):  # type: ignore[no-untyped-def]
            return {
                o: np.zeros((len(inputs["X"]), 3) if o == "probabilities" else len(inputs["X"]))
                for o in outputs
            }

        async def close(self) -> None:
            return None

    m = make_model(big_model.onnx_bytes, name="big", max_batch=8, max_delay_ms=50)
    r = _router(m, remotes={"cloud": FastCloud()}, inline_max_us=0, default_remote_ms=0.5)  # type: ignore[dict-item]
    st = r.state("big")
    st.ewma["edge"] = 5.0  # pretend the edge takes 5 ms per batch

    async def go():  # type: ignore[no-untyped-def]
        backlog = [asyncio.ensure_future(r.infer("big", big_model.X_test[:8])) for _ in range(4)]
        await asyncio.sleep(0)
        res = await r.infer("big", big_model.X_test[:1], budget_ms=3)
        await asyncio.gather(*backlog)
        return res

    res = asyncio.run(go())
    assert res.target == "cloud" and "misses budget" in res.reason


def test_histogram_percentiles():
    h = Histogram()
    for v in [1.0] * 90 + [10.0] * 9 + [100.0]:
        h.observe(v)
    s = h.summary()
    assert 1.0 <= s["p50_ms"] <= 1.13 and 10.0 <= s["p95_ms"] <= 11.3 and s["max_ms"] == 100.0
