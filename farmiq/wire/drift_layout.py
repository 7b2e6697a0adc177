"""How a drift window's columns lie in its flat counts: the one reading of a reference's
layout, shared by the gateway (edge_agent/telemetry/drift_stats.py bins rows into it) and
the control plane (control_plane/drift/analysis.py compares windows against it).

Columns are the reference's features in order, then the prediction column if the
reference has one; each column owns ``len(counts)`` histogram slots, one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from farmiq.drift_reference import PREDICTION


@dataclass(frozen=True)
class ColumnLayout:
    names: list[str]  # features, then the prediction column if any
    kinds: list[str]  # "numeric" | "categorical"
    specs: list[Mapping[str, Any]]  # each column's reference entry (edges, counts, ...)
    slots: np.ndarray  # [C] histogram slots per column
    offsets: np.ndarray  # [C] flat offset of each column's histogram
    total: int  # slots of all columns
    n_features: int  # input features (the prediction column comes after)
    has_prediction: bool

    @classmethod
    def from_reference(cls, ref: Mapping[str, Any]) -> ColumnLayout:
        specs = list(ref["features"].items())
        n_features = len(specs)
        has_pred = ref.get("prediction") is not None
        if has_pred:
            specs.append((PREDICTION, ref["prediction"]))
        slots = np.array([len(s["counts"]) for _, s in specs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(slots)[:-1]]).astype(np.int64)
        return cls(
            names=[n for n, _ in specs],
            kinds=[s["kind"] for _, s in specs],
            specs=[s for _, s in specs],
            slots=slots,
            offsets=offsets,
            total=int(slots.sum()),
            n_features=n_features,
            has_prediction=has_pred,
        )
