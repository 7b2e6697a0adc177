"""Per-model training entrypoints: a Python callable ``module:function`` that takes a
``TrainingData`` and returns a fitted scikit-learn estimator (FarmIQ converts it to ONNX
at registration) or ONNX bytes."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENTRYPOINT_FORMAT = "package.module:function"


@dataclass
class TrainingData:
    model: str
    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    labels: list[str] | None
    window: tuple[float, float]
    parent_version: int | None
    params: dict[str, Any] = field(default_factory=dict)  # from the model's learning config


Entrypoint = Callable[[TrainingData], Any]


def load_entrypoint(spec: str) -> Entrypoint:
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"training entrypoint {spec!r} is not {ENTRYPOINT_FORMAT}")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"training entrypoint {spec!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise ValueError(f"training entrypoint {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def standardized_logistic(data: TrainingData) -> Any:
    """The default trainer: standardisation and a logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = float(data.params.get("C", 1.0))
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(
        data.X, data.y
    )
