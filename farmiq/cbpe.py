"""A label-free accuracy estimate per window (CBPE, confidence-based performance
estimation): with confidences calibrated so that "0.8" means right 80 % of the time, the
expected accuracy of a window is the mean calibrated confidence of the predicted classes,
no labels needed. It holds under covariate shift (inputs move, the labelling rule does
not); a changed labelling rule (concept drift) needs labels (feedback).

* ``fit_calibration(confidence, correct)`` at registration, on a labelled holdout: an
  isotonic map from the model's top-class probability to P(correct), as a small JSON-able
  ``Calibration`` (knots) to ship in the bundle;
* ``estimate(calibration, probabilities)`` on a gateway window: ``Estimate``
  (expected accuracy, rows, standard error).

Pure numpy on purpose: it runs on gateways, which must not import scikit-learn (whose
``IsotonicRegression`` does the same fit); the pool-adjacent-violators fit is 20 lines.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_KNOTS = 64


@dataclass(frozen=True)
class Calibration:
    """Piecewise-linear, non-decreasing map from top-class confidence to P(correct)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    rows: int

    def apply(self, confidence: np.ndarray) -> np.ndarray:
        c = np.asarray(confidence, dtype=np.float64)
        return np.interp(c, self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "isotonic", "x": list(self.x), "y": list(self.y), "rows": self.rows}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Calibration:
        try:
            x = tuple(float(v) for v in doc["x"])
            y = tuple(float(v) for v in doc["y"])
            rows = int(doc.get("rows", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"calibration: {exc}") from None
        if doc.get("kind", "isotonic") != "isotonic" or not x or len(x) != len(y):
            raise ValueError("calibration: an isotonic map with as many x as y knots")
        if list(x) != sorted(x) or any(b < a for a, b in itertools.pairwise(y)):
            raise ValueError("calibration: knots must be non-decreasing")
        if not all(0.0 <= v <= 1.0 for v in x + y):
            raise ValueError("calibration: knots must lie in [0, 1]")
        return cls(x, y, rows)


@dataclass(frozen=True)
class Estimate:
    expected_accuracy: float | None  # None for an empty window
    rows: int
    std_error: float | None  # of the expected accuracy, from the Bernoulli variances

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected_accuracy": self.expected_accuracy,
            "rows": self.rows,
            "std_error": self.std_error,
        }


def top_confidence(probabilities: np.ndarray) -> np.ndarray:
    """The predicted class's probability per row, from [n, classes] (or [n] for binary
    P(class 1))."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be [n, classes>=2] or [n]; got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("probabilities must be finite")
    return np.asarray(p.max(axis=1))


def fit_calibration(
    confidence: np.ndarray, correct: np.ndarray, min_rows: int = 100
) -> Calibration:
    """Isotonic regression of ``correct`` (0/1) on ``confidence`` (pool adjacent
    violators), compressed to at most ``MAX_KNOTS`` knots."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(c) != len(ok):
        raise ValueError("confidence and correct must have the same length")
    if len(c) < min_rows:
        raise ValueError(f"calibration needs at least {min_rows} labelled rows; got {len(c)}")
    if not np.isfinite(c).all() or ((c < 0) | (c > 1)).any():
        raise ValueError("confidences must be finite and in [0, 1]")
    order = np.argsort(c, kind="stable")
    c, ok = c[order], ok[order]
    # Pool adjacent violators: blocks of consecutive rows (sum, count), merged while the
    # block means decrease.
    sums: list[float] = []
    weights: list[float] = []
    for yi in ok:
        sums.append(float(yi))
        weights.append(1.0)
        while len(sums) > 1 and sums[-2] / weights[-2] > sums[-1] / weights[-1]:
            s, w = sums.pop(), weights.pop()
            sums[-1] += s
            weights[-1] += w
    means = np.asarray(sums) / np.asarray(weights)
    # Knot of a block: the weighted mean confidence of its rows.
    starts = np.concatenate([[0], np.cumsum(weights)[:-1]]).astype(int)
    knots_x = np.array([c[s : s + int(w)].mean() for s, w in zip(starts, weights, strict=True)])
    if len(knots_x) > MAX_KNOTS:  # keep the map where the rows are: at their quantiles
        qx = np.unique(np.quantile(c, np.linspace(0, 1, MAX_KNOTS)))
        means = np.interp(qx, knots_x, means)
        knots_x = qx
    return Calibration(
        tuple(float(v) for v in np.clip(knots_x, 0, 1)),
        tuple(float(v) for v in np.clip(np.maximum.accumulate(means), 0, 1)),
        len(c),
    )


def estimate(calibration: Calibration, probabilities: np.ndarray) -> Estimate:
    """Expected accuracy of one window of predictions, without labels."""
    conf = top_confidence(probabilities)
    if len(conf) == 0:
        return Estimate(None, 0, None)
    p = calibration.apply(conf)
    n = len(p)
    return Estimate(float(p.mean()), n, float(np.sqrt((p * (1 - p)).sum()) / n))
