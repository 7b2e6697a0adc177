"""Candidate models for rollout tests: a good one, one that disagrees with it (its labels
permuted), and one that passes a warm-up on zeros but answers NaN on every real reading."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from farmiq_sim.barn_model import FEATURES, LABELS, synthetic_barn, train_barn_model
from tests.support.procs import ControlPlaneProc

META = {"task": "classification", "labels": LABELS, "feature_names": FEATURES}


def permuted_label_model(seed: int = 0) -> bytes:
    """Trained on the same barns with every label shifted by one: it disagrees with a
    correctly trained model on nearly every row (a model with its label map scrambled)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = synthetic_barn(600, seed)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, (y + 1) % 3)
    onx = to_onnx(
        pipe,
        X[:1],
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()  # type: ignore[no-any-return]


def nan_on_real_inputs_model(onnx_bytes: bytes) -> bytes:
    """The barn model plus ``sqrt(-min(x))`` added to its probabilities: exactly 0 on the
    installer's warm-up zeros (so it loads and passes the health check), NaN as soon as a
    reading is positive, i.e. on every real barn."""
    import onnx
    from onnx import helper

    m = onnx.load_from_string(onnx_bytes)
    g = m.graph
    x = g.input[0].name
    probs = next(o for o in g.output if o.name == "probabilities")
    for node in g.node:  # rename the original probabilities output
        node.output[:] = ["probabilities_raw" if o == probs.name else o for o in node.output]
    g.node.extend(
        [  # opset 17: ReduceMin takes its axes as an attribute
            helper.make_node("ReduceMin", [x], ["x_min"], axes=[1], keepdims=1),
            helper.make_node("Neg", ["x_min"], ["neg_min"]),
            helper.make_node("Sqrt", ["neg_min"], ["poison"]),
            helper.make_node("Add", ["probabilities_raw", "poison"], [probs.name]),
        ]
    )
    onnx.checker.check_model(m)
    return m.SerializeToString()  # type: ignore[no-any-return]


def register(
    cp: ControlPlaneProc,
    model: str,
    onnx_bytes: bytes,
    reference: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    files: dict[str, Any] = {"file": ("m.onnx", onnx_bytes)}
    if reference is not None:
        files["reference"] = ("reference.json", json.dumps(reference).encode())
    with cp.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files=files,
            data={"name": model, "meta": json.dumps(meta or META)},
        )
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def good_model(seed: int) -> Any:
    return train_barn_model(n=600, seed=seed)


def barn_rows(n: int, seed: int = 7) -> list[list[float]]:
    X, _ = synthetic_barn(n, seed)
    return np.round(X.astype(float), 3).tolist()  # type: ignore[no-any-return]
