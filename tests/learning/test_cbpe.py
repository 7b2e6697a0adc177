"""The label-free estimate (farmiq/cbpe.py): calibrated on a labelled holdout at
registration, it tells a barn with no labels how accurate its model is in a window, also
when the inputs move towards the decision boundary and accuracy falls; the model's raw
(overconfident) probabilities would not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from farmiq.cbpe import Calibration, estimate, fit_calibration, top_confidence


def _barn(n: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(0, spread, (n, 2))
    y = (X[:, 0] + X[:, 1] + rng.normal(0, 0.6, n) > 0).astype(np.int64)
    return X, y


def _overconfident(model: object, X: np.ndarray) -> np.ndarray:
    """The model's probabilities, made 3x too sure (as many trained models are)."""
    logit = model.decision_function(X)  # type: ignore[attr-defined]
    p1 = 1 / (1 + np.exp(-3 * logit))
    return np.column_stack([1 - p1, p1])


@pytest.fixture(scope="module")
def fitted() -> tuple[object, Calibration]:
    from sklearn.linear_model import LogisticRegression

    X, y = _barn(6000, 0, 1.0)  # the registration holdout: 4000 labelled rows
    model = LogisticRegression().fit(X[:2000], y[:2000])
    probs = _overconfident(model, X[2000:])
    correct = probs.argmax(axis=1) == y[2000:]
    cal = fit_calibration(top_confidence(probs), correct)
    return model, cal


@pytest.mark.parametrize("spread", [1.5, 0.7, 0.35])
def test_expected_accuracy_tracks_the_real_one_without_labels(fitted, spread: float) -> None:
    model, cal = fitted
    X, y = _barn(3000, 7, spread)  # inputs closer to the boundary: a harder window
    probs = _overconfident(model, X)
    real = float((probs.argmax(axis=1) == y).mean())
    est = estimate(cal, probs)
    raw = float(top_confidence(probs).mean())
    assert est.rows == 3000 and est.std_error is not None and est.std_error < 0.02
    assert est.expected_accuracy is not None
    assert est.expected_accuracy == pytest.approx(real, abs=0.03), (est, real)
    if spread < 1.0:  # uncalibrated confidence misses the fall; the estimate does not
        assert abs(raw - real) > abs(est.expected_accuracy - real) + 0.03, (raw, real)


def test_a_falling_window_shows_lower_expected_accuracy(fitted) -> None:
    model, cal = fitted
    easy = estimate(cal, _overconfident(model, _barn(2000, 1, 1.5)[0]))
    hard = estimate(cal, _overconfident(model, _barn(2000, 2, 0.35)[0]))
    assert easy.expected_accuracy and hard.expected_accuracy
    assert hard.expected_accuracy < easy.expected_accuracy - 0.1


def test_calibration_travels_as_json_and_bad_input_is_a_clear_error(fitted) -> None:
    _, cal = fitted
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal and len(cal.x) <= 64
    conf = np.linspace(0.5, 1, 11)
    assert np.all(np.diff(cal.apply(conf)) >= 0)  # more confident is never less accurate
    assert estimate(cal, np.zeros((0, 3))).expected_accuracy is None
    assert estimate(cal, np.array([0.9, 0.2])).rows == 2  # binary P(class 1)
    with pytest.raises(ValueError, match="at least"):
        fit_calibration(np.full(10, 0.9), np.ones(10))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fit_calibration(np.full(200, 1.5), np.ones(200))
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration.from_dict({"x": [0.5, 0.9], "y": [0.9, 0.5]})
    with pytest.raises(ValueError, match="finite"):
        estimate(cal, np.array([[np.nan, 1.0]]))
