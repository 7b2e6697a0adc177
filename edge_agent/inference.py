"""Local inference: validate the request against the model's schema and run it.

The hybrid router (edge_agent/router.py) builds on this to choose between local, MCU and
cloud targets; this module is the "edge" target's request path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edge_agent.local_api import ApiError
from edge_agent.serving import LoadedModel, ModelSet
from edge_agent.validation import InputError, parse_inputs


def outputs_to_json(outs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in outs.items()}


class InferenceService:
    def __init__(self, models: ModelSet) -> None:
        self.models = models

    def model(self, name: str) -> LoadedModel:
        m = self.models.get(name)
        if m is None:
            raise ApiError(404, f"unknown model {name!r}", known=[x.name for x in self.models.all()])
        return m

    async def infer(self, name: str, inputs: Any, *, budget_ms: float | None = None) -> dict[str, Any]:
        model = self.model(name)
        try:
            arrays = parse_inputs(model.manifest, inputs, model.manifest.serving.max_batch)
        except InputError as exc:
            raise ApiError(422, str(exc)) from None
        t0 = time.perf_counter()
        outs = model.run(arrays)
        latency = (time.perf_counter() - t0) * 1000
        return {
            "model": model.name,
            "version": model.version,
            "target": "edge",
            "reason": "local model",
            "latency_ms": round(latency, 4),
            "outputs": outputs_to_json(outs),
        }
