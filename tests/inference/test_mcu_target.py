"""The MCU target: firmware_bridge's link errors trip the breaker, model errors do not, and
a hung MCU costs at most the per-request deadline before the router falls back to the edge.

The manager here is a stand-in with firmware_bridge's own exception types: the hang and
the NACK are what a real serial MCU does at its worst, and they are hard to provoke on
demand from the simulator.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from edge_agent.inference.breaker import OPEN
from edge_agent.inference.router import Router
from edge_agent.inference.targets.mcu_target import McuTarget
from edge_agent.models.serving import ModelSet
from firmware_bridge.manager import InferenceError
from firmware_bridge.messages import NackCode
from firmware_bridge.reliability import NackError
from tests.inference.conftest import make_model


class _Manager:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls = 0

    def has_model(self, model_id: str) -> str | None:
        return "mcu-1"

    async def infer(self, device: str, model: str, x: Any, *, timeout: float) -> Any:
        self.calls += 1
        if self.behaviour == "hang":
            await asyncio.sleep(3600)  # ignores its timeout, like a wedged link
        if self.behaviour == "nack":
            raise NackError(NackCode.BUSY)
        raise InferenceError("MCU could not run the model")


def _router(barn_model: Any, manager: _Manager, deadline_s: float = 0.25) -> Router:
    ms = ModelSet()
    ms.swap(make_model(barn_model.onnx_bytes, targets=["mcu", "edge"]))
    target = McuTarget(manager, deadline_s=deadline_s)
    return Router(ms, remotes={"mcu": target}, breaker_failures=2, breaker_reset_s=30)


def test_hung_mcu_costs_at_most_the_deadline_then_edge_answers(barn_model: Any) -> None:
    r = _router(barn_model, _Manager("hang"), deadline_s=0.1)
    rows = np.asarray(barn_model.X_test[:1], dtype=np.float32).tolist()

    async def go() -> list[Any]:
        out = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = await r.infer("barn", rows)  # no budget: the MCU deadline bounds the wait
            out.append((res, time.perf_counter() - t0))
        await r.close()
        return out

    results = asyncio.run(go())
    assert all(res.target == "edge" for res, _ in results)
    assert results[0][0].fallback_from == ["mcu"]
    assert all(dt < 1.0 for _, dt in results)  # not the hour the MCU would take
    assert r.breakers["mcu"].state == OPEN  # a timeout is the link's fault
    assert "circuit breaker open" in results[-1][0].reason


def test_nack_trips_the_breaker_model_error_does_not(barn_model: Any) -> None:
    rows = np.asarray(barn_model.X_test[:1], dtype=np.float32).tolist()
    for behaviour, trips in (("nack", True), ("model", False)):
        mgr = _Manager(behaviour)
        r = _router(barn_model, mgr)

        async def go(r: Router = r) -> list[Any]:
            out = [await r.infer("barn", rows, use_cache=False) for _ in range(3)]
            await r.close()
            return out

        results = asyncio.run(go())
        assert all(x.target == "edge" for x in results)
        assert (r.breakers["mcu"].state == OPEN) is trips, behaviour
        assert mgr.calls == (2 if trips else 3), behaviour  # an open breaker stops asking
