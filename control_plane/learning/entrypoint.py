"""Per-model training entrypoints, two kinds:

* a Python callable ``module:function`` that takes a ``TrainingData`` and returns a fitted
  scikit-learn estimator (FarmIQ converts it to ONNX at registration) or ONNX bytes;
* an MLflow Project, ``mlflow-project:<directory or git URI>[#<entry point>]``: run with
  ``mlflow.projects.run`` inside the loop's own MLflow run (the project resumes it through
  ``MLFLOW_RUN_ID``), in this environment (``env_manager="local"``). Its entry point gets
  ``train_csv`` (the training rows: one column per feature, then ``label``), ``label``
  (that column's name) and the model's learning ``params``; it must log the model as
  ``model`` (``mlflow.sklearn.log_model(..., name="model")`` or the onnx flavor).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENTRYPOINT_FORMAT = "package.module:function or mlflow-project:<uri>[#entry point]"
PROJECT_PREFIX = "mlflow-project:"


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


def is_project(spec: str) -> bool:
    return spec.startswith(PROJECT_PREFIX)


def check_project(spec: str) -> tuple[str, str]:
    """(uri, entry point) of a project entrypoint; a local project must have an MLproject."""
    from pathlib import Path

    uri, _, entry = spec[len(PROJECT_PREFIX) :].partition("#")
    if not uri:
        raise ValueError(f"training entrypoint {spec!r} names no project ({ENTRYPOINT_FORMAT})")
    local = "://" not in uri and not uri.startswith("git@")
    if local and not (Path(uri) / "MLproject").is_file():
        raise ValueError(f"training entrypoint {spec!r}: no MLproject file in {uri}")
    return uri, entry or "main"


def run_project(spec: str, run_id: str, train_csv: str, params: dict[str, Any]) -> None:
    """Run the project's entry point to completion inside MLflow run ``run_id``."""
    import os
    import sys
    from pathlib import Path

    import mlflow.projects

    uri, entry = check_project(spec)
    # The project's command says `python ...`: this environment's, whatever PATH says.
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old_path}"
    try:
        submitted = mlflow.projects.run(
            uri, entry_point=entry, run_id=run_id, env_manager="local", synchronous=True,
            parameters={"train_csv": train_csv, "label": "label", **params},
        )  # fmt: skip
    except mlflow.projects.ExecutionException as exc:
        raise ValueError(f"MLflow project {uri}#{entry} failed: {exc}") from None
    finally:
        os.environ["PATH"] = old_path
    if submitted.get_status() != "FINISHED":
        raise ValueError(f"MLflow project {uri}#{entry} ended {submitted.get_status()}")


def check_entrypoint(spec: str) -> None:
    """Raise ValueError now (at start-up) for an entrypoint that cannot run later."""
    if is_project(spec):
        check_project(spec)
    else:
        load_entrypoint(spec)


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
