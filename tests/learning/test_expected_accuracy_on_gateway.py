"""The label-free estimate on a real gateway (issue 15, item 5): a bundle carries the
calibration fitted on a labelled holdout; the agent's drift windows then carry the sums of
the calibrated confidences of what it answered, and the control plane turns them into an
expected accuracy per window, per gateway and for the fleet. When the barn's inputs move
towards the model's decision boundary (the labelling rule unchanged), accuracy falls and
the estimate falls with it, with no label sent anywhere."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine

from control_plane.drift.ingest import DriftService
from control_plane.learning.champion import probabilities
from control_plane.model_intake import from_sklearn
from farmiq import topics
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot
from farmiq.cbpe import fit_calibration, top_confidence
from farmiq.drift_reference import build_reference
from farmiq.wire import DriftWindow
from tests.edge_robustness.helpers import Gateway
from tests.learning.test_learning_loop import FEATURES, LABELS, world
from tests.security.helpers import Listener
from tests.support.procs import AgentProc

MODEL = "barn"


def _windows(listener: Listener, topic: str) -> dict[str, dict[str, Any]]:
    out = {}
    for raw in listener.on(topic):
        doc = json.loads(raw)
        if doc.get("type") == "drift_window":
            out[doc["id"]] = doc
    return out


def _serve(agent: AgentProc, rows: np.ndarray) -> np.ndarray:
    labels = []
    for i in range(0, len(rows), 50):
        r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": rows[i : i + 50].tolist()})
        assert r.status_code == 200, r.text
        labels += r.json()["outputs"]["label"]
    return np.asarray(labels).reshape(-1)


def _phase(
    agent: AgentProc, listener: Listener, topic: str, rows: np.ndarray, seen: set[str]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Serve ``rows``; the windows that hold them (new ids) once they all arrived."""
    labels = _serve(agent, rows)
    deadline = time.time() + 30
    while True:
        new = [w for k, w in _windows(listener, topic).items() if k not in seen]
        if sum(w["n"] for w in new) >= len(rows):
            seen.update(w["id"] for w in new)
            return labels, new
        assert time.time() < deadline, f"{sum(w['n'] for w in new)} of {len(rows)} rows reported"
        time.sleep(0.2)


def test_a_gateway_reports_its_expected_accuracy_without_labels(
    agent_factory: Callable[..., AgentProc], device_id: str, mqtt_port: int, tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = world(9000, seed=11, shifted=False)
    train, hold, live = slice(0, 3000), slice(3000, 6000), slice(6000, 9000)
    clf = LogisticRegression(max_iter=1000).fit(X[train], y[train])
    onnx = from_sklearn(clf, len(FEATURES)).model_bytes
    probs = probabilities(onnx, "onnxruntime", X[hold])
    assert probs is not None
    cal = fit_calibration(top_confidence(probs), probs.argmax(axis=1) == y[hold])
    ref = build_reference(
        {f: X[train, i] for i, f in enumerate(FEATURES)},
        prediction=clf.predict(X[train]).astype(float),
        prediction_categorical=True,
    )
    signer = Signer.generate()
    bundle = build_bundle(
        onnx, name=MODEL, version=1, signers=[signer], labels=LABELS,
        feature_names=FEATURES, reference=ref, calibration=cal.to_dict(),
    )  # fmt: skip
    trust = TrustRoot.for_signers([signer], director=[Signer.generate()]).model_dump(mode="json")
    agent = agent_factory(device_id, trust, drift={"window_s": 1.0, "checkpoint_s": 0})
    topic = topics.up(device_id, topics.DRIFT)
    listener = Listener(mqtt_port, [topic, topics.up(device_id, topics.INSTALL_ACK)])
    try:
        agent.wait_for(lambda s: s["broker_connected"], what="broker")
        ack = Gateway(agent, listener, signer).push(bundle)
        assert ack["ok"], ack

        # 1. the barn as it was trained on
        seen: set[str] = set()
        Xl, yl = X[live], y[live]
        labels, normal = _phase(agent, listener, topic, Xl[:1500], seen)
        # 2. the inputs move towards the decision boundary; the labelling rule stays
        live_probs = probabilities(onnx, "onnxruntime", Xl)
        assert live_probs is not None
        near = np.argsort(top_confidence(live_probs))[:600]
        labels_b, shifted = _phase(agent, listener, topic, Xl[near], seen)
    finally:
        listener.close()

    for w in normal + shifted:
        DriftWindow.model_validate(w)  # the wire model of up/drift
        assert w["expected_accuracy"]["rows"] == w["n"], w["expected_accuracy"]
    true_a = float((labels == yl[:1500]).mean())
    true_b = float((labels_b == yl[near]).mean())
    assert true_b < true_a - 0.15, (true_a, true_b)  # the shift really costs accuracy

    # The control plane's view: what the gateway sent, ingested as the fleet's ingest does.
    svc = DriftService(create_engine(f"sqlite:///{tmp_path / 'cp.db'}"))
    svc.create_tables()
    svc.set_reference(MODEL, ref)
    for w in normal + shifted:
        res = svc.ingest_window(device_id, json.dumps(w).encode())
        assert res.stored == [w["id"]], res.rejected
    split = max(w["end"] for w in normal)
    a = svc.expected_accuracy(MODEL, since=0, until=split)
    b = svc.expected_accuracy(MODEL, since=split, until=time.time() + 60)
    est_a, est_b = a["fleet"]["expected_accuracy"], b["fleet"]["expected_accuracy"]
    print(f"accuracy: normal {true_a:.3f} (expected {est_a:.3f}), "
          f"near the boundary {true_b:.3f} (expected {est_b:.3f})")  # fmt: skip
    assert a["fleet"]["rows"] == 1500 and b["fleet"]["rows"] == 600
    assert est_a == pytest.approx(true_a, abs=0.05)
    assert est_b == pytest.approx(true_b, abs=0.08)
    assert est_b < est_a - 0.1  # the drop shows, with no label
    assert set(a["devices"]) == {device_id} and a["windows"]
    assert 0 < a["fleet"]["std_error"] < 0.02
