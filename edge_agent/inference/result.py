"""One answer of the router: outputs, and where and why it was computed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

_OPT = orjson.OPT_SERIALIZE_NUMPY


@dataclass(slots=True)
class InferenceResult:
    model: str
    version: int
    target: str
    reason: str
    latency_ms: float
    outputs: dict[str, np.ndarray]
    cached: bool = False
    confidence: list[float] | None = None
    low_confidence: bool = False
    escalated_rows: int = 0
    fallback_from: Sequence[str] = ()  # no list allocated per answer

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "target": self.target,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
            "outputs": self.outputs,
        }
        if self.cached:
            d["cached"] = True
        if self.confidence is not None:
            d["confidence"] = self.confidence
            d["low_confidence"] = self.low_confidence
            d["escalated_rows"] = self.escalated_rows
        if self.fallback_from:
            d["fallback_from"] = self.fallback_from
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict(), option=_OPT)

    def outputs_as_lists(self) -> dict[str, Any]:
        return {k: np.asarray(v).tolist() for k, v in self.outputs.items()}
