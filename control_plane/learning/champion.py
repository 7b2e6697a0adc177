"""Champion and challenger, compared on the same labelled holdout from the drift period,
each run in the gateway's runtime on its registered bytes. A challenger is promoted only
when it beats the champion by the stated margin on enough rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.02  # accuracy points (classification) or relative MAE (regression)
    min_holdout: int = 200
    approval: bool = False  # an operator approves before production moves


@dataclass
class Comparison:
    metric: str  # accuracy or mae
    champion: float | None
    challenger: float
    rows: int
    wins: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _run(model_bytes: bytes, runtime: str, X: np.ndarray) -> tuple[Any, dict[str, Any]]:
    from control_plane.model_gate import _run_litert, _run_onnx
    from farmiq.bundle.builder import io_specs

    inputs, outputs = io_specs(model_bytes, runtime)
    feed = {inputs[0].name: X.astype(inputs[0].dtype)}
    run = _run_onnx if runtime == "onnxruntime" else _run_litert
    return outputs, run(model_bytes, inputs, outputs, feed)


def probabilities(model_bytes: bytes, runtime: str, X: np.ndarray) -> np.ndarray | None:
    """The class probabilities [n, classes] a gateway computes, or None (no such output)."""
    outputs, res = _run(model_bytes, runtime, X)
    for spec in outputs:
        arr = res[spec.name]
        if arr.dtype.kind == "f" and arr.ndim == 2 and arr.shape[1] > 1:
            return np.asarray(arr, dtype=np.float64)
    return None


def predictions(model_bytes: bytes, runtime: str, X: np.ndarray, task: str) -> np.ndarray:
    """Class indices (classification) or values (regression) as a gateway computes them."""
    outputs, res = _run(model_bytes, runtime, X)
    if task == "regression":
        return np.asarray(res[outputs[0].name], dtype=np.float64).reshape(len(X), -1)[:, 0]
    for spec in outputs:  # probabilities: a float [n, classes] output
        arr = res[spec.name]
        if arr.dtype.kind == "f" and arr.ndim == 2 and arr.shape[1] > 1:
            return np.asarray(arr.argmax(axis=1), dtype=np.int64)
    return np.asarray(res[outputs[0].name]).reshape(len(X)).astype(np.int64)


def score(pred: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "regression":
        return float(np.mean(np.abs(pred - y.astype(np.float64))))
    return float(np.mean(pred == y.astype(np.int64)))


def compare(
    champion: float | None, challenger: float, rows: int, task: str, policy: PromotionPolicy
) -> Comparison:
    metric = "mae" if task == "regression" else "accuracy"
    if rows < policy.min_holdout:
        return Comparison(
            metric, champion, challenger, rows, False,
            f"only {rows} holdout rows (< {policy.min_holdout}): no promotion",
        )  # fmt: skip
    if champion is None:
        return Comparison(metric, None, challenger, rows, True, "no champion to beat")
    if metric == "accuracy":
        gain = challenger - champion
        wins = gain >= policy.margin
        text = f"accuracy {challenger:.3f} vs champion {champion:.3f} ({gain:+.3f}"
    else:
        gain = (champion - challenger) / champion if champion > 0 else 0.0
        wins = gain >= policy.margin
        text = f"MAE {challenger:.4g} vs champion {champion:.4g} ({gain:+.1%}"
    verdict = "wins" if wins else "does not win"
    return Comparison(
        metric, champion, challenger, rows, wins,
        f"challenger {verdict}: {text}, margin {policy.margin})",
    )  # fmt: skip
