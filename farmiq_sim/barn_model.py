"""A small, believable barn model for demos, tests and benchmarks.

Synthetic broiler-house conditions -> ventilation level (off / low / high). The rule the
data follows: heat, humidity, ammonia and CO2 each push toward more ventilation, with noise.
Trained with scikit-learn and converted to ONNX with skl2onnx (probabilities as a plain
tensor, not a ZipMap, so gateways get arrays).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ["temperature_c", "humidity_pct", "ammonia_ppm", "co2_ppm"]
LABELS = ["off", "low", "high"]


def synthetic_barn(n: int, seed: int = 0, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``shift`` moves temperature and ammonia up (a hotter, dirtier barn) for drift demos."""
    rng = np.random.default_rng(seed)
    temp = rng.normal(24 + 4 * shift, 4, n)
    hum = np.clip(rng.normal(62, 10, n), 20, 100)
    nh3 = np.clip(rng.gamma(2.0, 6.0 + 6 * shift, n), 0, None)
    co2 = np.clip(rng.normal(1800, 500, n), 400, None)
    score = 0.25 * (temp - 24) + 0.05 * (hum - 62) + 0.08 * (nh3 - 12) + 0.002 * (co2 - 1800)
    score += rng.normal(0, 0.4, n)
    y = np.digitize(score, [-0.3, 1.2]).astype(np.int64)
    X = np.column_stack([temp, hum, nh3, co2]).astype(np.float32)
    return X, y


@dataclass
class TrainedModel:
    onnx_bytes: bytes
    accuracy: float
    X_test: np.ndarray
    y_test: np.ndarray
    reference: dict  # drift reference statistics of the training data (farmiq.drift_reference)


def train_barn_model(n: int = 4000, seed: int = 0, hidden: int | None = None) -> TrainedModel:
    """Train a scaler + classifier pipeline and convert it to ONNX.

    ``hidden`` picks an MLP with that many hidden units (bigger models for batching
    benchmarks); by default a logistic regression, tiny and fast.
    """
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = synthetic_barn(n, seed)
    split = int(n * 0.8)
    clf = (
        MLPClassifier(hidden_layer_sizes=(hidden, hidden), max_iter=300, random_state=seed)
        if hidden
        else LogisticRegression(max_iter=500)
    )
    pipe = make_pipeline(StandardScaler(), clf).fit(X[:split], y[:split])
    acc = float((pipe.predict(X[split:]) == y[split:]).mean())
    onx = to_onnx(
        pipe,
        X[:1],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    from farmiq.drift_reference import build_reference

    reference = build_reference(
        {f: X[:split, i] for i, f in enumerate(FEATURES)},
        prediction=pipe.predict(X[:split]),
        prediction_categorical=True,
    )
    return TrainedModel(onx.SerializeToString(), acc, X[split:], y[split:], reference)
