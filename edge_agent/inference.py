"""Thin compatibility layer: local inference now goes through the hybrid router
(edge_agent/router.py). Kept so code that calls ``agent.inference`` keeps working."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.local_api import ApiError
from edge_agent.router import Router, RoutingError
from edge_agent.serving import LoadedModel


def outputs_to_json(outs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in outs.items()}


class InferenceService:
    def __init__(self, router: Router) -> None:
        self.router = router

    def model(self, name: str) -> LoadedModel:
        m = self.router.models.get(name)
        if m is None:
            raise ApiError(
                404, f"unknown model {name!r}", known=[x.name for x in self.router.models.all()]
            )
        return m

    async def infer(
        self, name: str, inputs: Any, *, budget_ms: float | None = None
    ) -> dict[str, Any]:
        try:
            res = await self.router.infer(name, inputs, budget_ms=budget_ms)
        except RoutingError as exc:
            raise ApiError(exc.status, exc.message, **exc.extra) from None
        d = res.as_dict()
        d["outputs"] = outputs_to_json(res.outputs)
        return d
