"""Probe a freshly installed model on real inputs before the gateway commits to it.

The installer's health check warms a model up on zeros, which a broken model can pass:
``sqrt(-x)`` is 0 on zeros and NaN on every real reading; a bad cast or a division by a
feature can do the same. So probation runs the new model on inputs that look like the
barn's: rows the previous version answered recently on this gateway (``RecentInputs``,
filled by the request path) and the sample rows of the bundle's drift reference (the
training data, shipped in the bundle by the registry). Any exception or non-finite output
is a reason to roll back.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import orjson

from edge_agent.inference.validation import InputError, parse_inputs
from edge_agent.models.serving import LoadedModel
from farmiq.drift_reference import PREDICTION

REFERENCE_ROWS = 64  # reference sample rows probed (a few ms for a small model)


class RecentInputs:
    """The last few request inputs per model that a served model answered (bounded)."""

    def __init__(self, per_model: int = 8) -> None:
        self.per_model = per_model
        self._by_model: dict[str, deque[Any]] = {}

    def add(self, model: str, inputs: Any) -> None:
        q = self._by_model.get(model)
        if q is None:
            q = self._by_model[model] = deque(maxlen=self.per_model)
        q.append(inputs)

    def extend(self, model: str, inputs: list[Any]) -> None:
        q = self._by_model.get(model)
        if q is None:
            q = self._by_model[model] = deque(maxlen=self.per_model)
        q.extend(inputs[-self.per_model :])

    def get(self, model: str) -> list[Any]:
        return list(self._by_model.get(model, ()))


def non_finite(outputs: dict[str, Any]) -> str | None:
    """Name of the first float output holding NaN or inf, else None."""
    for key, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            continue
        if arr.size <= 64:
            # Runs on every answer: for a few values a Python sum is ~4x cheaper than
            # isfinite().all(). A NaN or inf makes the sum NaN or inf; a finite sum that
            # overflowed falls through to the exact check.
            total = sum(arr.ravel().tolist())
            if total - total == 0.0:
                continue
        if not np.isfinite(arr).all():
            return key
    return None


def reference_rows(model: LoadedModel, limit: int = REFERENCE_ROWS) -> list[list[float]] | None:
    """Feature rows from the bundle's drift reference sample, in the model's input order."""
    member = model.manifest.reference
    if not member:
        return None
    try:
        ref = orjson.loads((model.path / member).read_bytes())
        sample = ref.get("sample") or {}
        cols = list(sample.get("columns") or [])
        names = model.manifest.feature_names or [c for c in cols if c != PREDICTION]
        idx = [cols.index(n) for n in names]
        rows = [[float(r[i]) for i in idx] for r in (sample.get("rows") or [])[:limit]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return rows or None


def probe(model: LoadedModel, recent: list[Any]) -> str | None:
    """Run ``model`` on real inputs; a reason to roll back, or None when it answered well."""
    batches: list[tuple[str, Any]] = [("a recent request", x) for x in recent]
    rows = reference_rows(model)
    if rows is not None and len(model.manifest.inputs) == 1:
        step = max(1, model.manifest.serving.max_batch)
        batches += [("the reference sample", rows[i : i + step]) for i in range(0, len(rows), step)]
    for source, inputs in batches:
        try:
            arrays = parse_inputs(model.manifest, inputs, model.manifest.serving.max_batch)
        except InputError:
            continue  # an input this version does not accept is not the model's fault
        try:
            outs = model.run(arrays)
        except Exception as exc:  # any runtime failure on real data is disqualifying
            return f"v{model.version} failed on {source}: {exc}"
        bad = non_finite(outs)
        if bad is not None:
            return f"v{model.version} answered {source} with non-finite {bad!r}"
    return None
