"""The closed loop with no human: a barn's world shifts (hotter, and a new breed that
reacts to ammonia more than heat), the gateways' drift windows and labelled feedback
report it, the policy's hysteresis lets the second drifted hour through, the trigger runs
the model's training entrypoint as an MLflow run, the candidate is registered with its
lineage and promoted because it beats production on the shifted data by the margin. A
worse candidate is registered but never promoted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.trigger import Alerts, RetrainingTrigger
from control_plane.learning.champion import predictions
from control_plane.learning.examples import ExampleStore
from control_plane.learning.loop import LearningConfig, LearningLoop
from control_plane.registry import ModelRegistry
from control_plane.security.audit_log import create_audit_table, query_audit
from edge_agent.telemetry.drift_stats import DriftStats, encode_window
from farmiq.drift_reference import build_reference

FEATURES = ["temperature_c", "humidity_pct", "ammonia_ppm", "co2_kppm"]
LABELS = ["off", "low", "high"]
T0 = 1_790_000_000.0
HOUR = 3600.0


def world(n: int, seed: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    temp = rng.normal(30 if shifted else 24, 3, n)
    hum = rng.normal(62, 8, n)
    nh3 = rng.gamma(2.0, 7.0 if shifted else 6.0, n)
    co2 = rng.normal(1.8, 0.4, n)
    if shifted:  # the new breed: ammonia matters far more than heat
        score = 0.05 * (temp - 30) + 0.25 * (nh3 - 14) + 0.03 * (hum - 62)
    else:
        score = 0.4 * (temp - 24) + 0.05 * (nh3 - 12) + 0.03 * (hum - 62)
    y = np.digitize(score + rng.normal(0, 0.2, n), [-0.5, 1.0]).astype(np.int64)
    return np.column_stack([temp, hum, nh3, co2]).astype(np.float32), y


def flipped_labels(data: Any) -> Any:
    """A training entrypoint with a bug (it reverses the class order): the candidate it
    makes is worse than production."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(data.X, 2 - data.y)


@pytest.fixture
def loop_setup(tmp_path: Path) -> Any:
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    engine = create_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    drift = DriftService(engine)
    drift.create_tables()
    create_audit_table(engine)
    examples = ExampleStore(engine)
    examples.create_tables()

    X, y = world(3000, seed=1, shifted=False)
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    reference = build_reference(
        {f: X[:, i] for i, f in enumerate(FEATURES)},
        prediction=v1.predict(X),
        prediction_categorical=True,
    )
    registry.client.create_experiment("ds", artifact_location=(tmp_path / "ds").as_uri())
    mlflow.set_experiment("ds")
    with mlflow.start_run() as run:  # the data scientist's first model, the usual way
        mlflow.sklearn.log_model(
            v1, name="model", input_example=X[:3], pip_requirements=["scikit-learn"]
        )
        mlflow.log_dict(reference, "farmiq/reference.json")
    meta = {"labels": LABELS, "feature_names": FEATURES}
    for name in ("barn", "barn-worse", "barn-project"):
        mv = registry.register_uri(name, f"runs:/{run.info.run_id}/model", meta=meta)
        registry.promote(name, mv.version)
        drift.set_reference(name, reference)
    return registry, drift, examples, v1, reference


def _gateway_hour(
    drift: DriftService, examples: ExampleStore, model: str, v1: Any, ref: Any, h: int
) -> None:
    """Three gateways' hour in the shifted world: the agent's own drift statistics over
    what it served, and the labels farmers gave for some of it."""
    for d in range(3):
        device = f"gw-{model}-{d}"
        X, y = world(800, seed=1000 * h + d, shifted=True)
        start = T0 + h * HOUR
        stats = DriftStats(device, clock=lambda s=start: s)  # type: ignore[misc]
        stats.register(model, "1", ref)
        stats.observe(model, "1", X, v1.predict(X))
        for w in stats.close_window(now=start + 600):
            assert drift.ingest_window(device, encode_window(w)).stored
        ts = start + np.linspace(0, 600, 300)
        batch = {
            "type": "feedback_batch",
            "model": model,
            "examples": [
                {"ts": float(t), "inputs": X[i].tolist(), "truth": LABELS[int(y[i])]}
                for i, t in enumerate(ts)
            ],
        }
        assert examples.ingest(device, json.dumps(batch).encode()) == 300


def test_a_shift_retrains_and_promotes_a_better_model_with_no_human(loop_setup: Any) -> None:
    registry, drift, examples, v1, ref = loop_setup
    alerts: list[dict[str, Any]] = []
    config = LearningConfig.from_mapping(
        {
            "models": {
                "barn": {"lookback_s": HOUR, "promotion": {"margin": 0.05}},
                "barn-worse": {
                    "entrypoint": "tests.learning.test_learning_loop:flipped_labels",
                    "lookback_s": HOUR,
                    "promotion": {"margin": 0.0},
                },
            }
        }
    )
    loop = LearningLoop(
        registry,
        examples,
        config,
        alerts=Alerts(lambda t, b: alerts.append(json.loads(b))),
        audit_engine=drift.engine,
    )
    decider = RetrainingDecider(drift, RetrainingPolicy(min_consecutive=2, min_samples=1000))
    trigger = RetrainingTrigger(
        decider,
        registry.client,
        hook=loop,
        alerts=Alerts(lambda t, b: alerts.append(json.loads(b))),
    )
    decisions: dict[str, list[Any]] = {"barn": [], "barn-worse": []}
    for h in range(2):
        for model in decisions:
            _gateway_hour(drift, examples, model, v1, ref, h)
            since, until = T0 + h * HOUR, T0 + (h + 1) * HOUR
            decisions[model].append(trigger.trigger(model, since=since, until=until))

    first, second = decisions["barn"]
    assert not first.retrain and any("hysteresis" in r for r in first.reasons)
    assert second.retrain and second.triggered, second.reasons
    result = second.hook_result
    assert result and result["ok"] and result["status"] == "promoted", result
    new_version = result["candidate_version"]
    assert registry.resolve("barn").version == new_version == 2

    # The promoted model really is better on the shifted world, in the gateway runtime.
    X, y = world(2000, seed=99, shifted=True)
    old = (predictions(registry.model_bytes("barn", 1), "onnxruntime", X, "") == y).mean()
    new = (predictions(registry.model_bytes("barn", 2), "onnxruntime", X, "") == y).mean()
    assert new >= old + 0.05, (old, new)
    print(f"accuracy on the shifted world: production v1 {old:.3f}, retrained v2 {new:.3f}")

    # Lineage: the candidate names its parent, its data window and its training run.
    cand = registry.resolve("barn", 2)
    lineage = cand.meta["lineage"]
    assert lineage["parent_version"] == 1 and lineage["run_id"] == result["run_id"]
    assert lineage["data_window"][0] == pytest.approx(T0 + HOUR)
    assert lineage["dataset"]["digest"] and cand.meta["monitored"] is True
    run = registry.client.get_run(result["run_id"])
    assert (
        run.data.metrics["challenger_holdout_accuracy"]
        > run.data.metrics["champion_holdout_accuracy"]
    )
    assert run.data.params["entrypoint"].endswith(":standardized_logistic")
    assert run.data.tags["farmiq.promotion"] == "promoted"

    # The label-free estimate's calibration was fitted on the holdout at registration:
    # on the shifted world it expects about the accuracy the candidate really has.
    from control_plane.learning.champion import probabilities
    from farmiq.cbpe import Calibration, estimate

    tags = registry.client.get_model_version("barn", "2").tags
    cal = Calibration.from_dict(json.loads(tags["farmiq.calibration"]))
    probs = probabilities(registry.model_bytes("barn", 2), "onnxruntime", X)
    assert probs is not None
    expected = estimate(cal, probs).expected_accuracy
    assert expected == pytest.approx(new, abs=0.05), (expected, new)

    # The worse candidate is registered, compared, and never promoted.
    worse = decisions["barn-worse"][1]
    assert worse.triggered and worse.hook_result, worse.reasons
    assert worse.hook_result["status"] == "rejected", worse.hook_result
    assert not worse.hook_result["comparison"]["wins"]
    assert registry.resolve("barn-worse").version == 1
    kinds = {(a["kind"], a["model"]) for a in alerts}
    assert ("candidate_promoted", "barn") in kinds and ("candidate_rejected", "barn-worse") in kinds
    audited = {(e.action, e.target) for e in query_audit(drift.engine, actor="learning-loop")}
    assert audited == {
        ("learning.candidate_promoted", "barn/v2"),
        ("learning.candidate_rejected", "barn-worse/v2"),
    }


def test_a_data_scientists_mlflow_project_trains_the_candidate(loop_setup: Any) -> None:
    """The training entrypoint can be an MLflow Project (here tests/learning/barn_project):
    the loop runs it inside its own run, and the model the project logs is the candidate,
    registered with its lineage and promoted when it wins."""
    registry, drift, examples, v1, ref = loop_setup
    project = Path(__file__).parent / "barn_project"
    config = LearningConfig.from_mapping(
        {
            "models": {
                "barn-project": {
                    "entrypoint": f"mlflow-project:{project}",
                    "params": {"C": 0.5},
                    "lookback_s": HOUR,
                    "promotion": {"margin": 0.05},
                }
            }
        }
    )
    loop = LearningLoop(registry, examples, config, audit_engine=drift.engine)
    decider = RetrainingDecider(drift, RetrainingPolicy(min_consecutive=2, min_samples=1000))
    trigger = RetrainingTrigger(decider, registry.client, hook=loop)
    decisions = []
    for h in range(2):
        _gateway_hour(drift, examples, "barn-project", v1, ref, h)
        decisions.append(
            trigger.trigger("barn-project", since=T0 + h * HOUR, until=T0 + (h + 1) * HOUR)
        )
    result = decisions[1].hook_result
    assert result and result["status"] == "promoted", result
    assert registry.resolve("barn-project").version == 2
    run = registry.client.get_run(result["run_id"])
    assert run.data.tags["trainer"] == "barn_project"  # the project's own code ran
    assert run.data.params["param.C"] == "0.5" and "project_train_accuracy" in run.data.metrics
    assert run.data.tags["farmiq.entrypoint"] == f"mlflow-project:{project}"
    lineage = registry.resolve("barn-project", 2).meta["lineage"]
    assert lineage["run_id"] == result["run_id"] and lineage["parent_version"] == 1


def test_a_project_entrypoint_without_an_mlproject_is_a_set_up_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no MLproject"):
        LearningConfig.from_mapping(
            {"models": {"barn": {"entrypoint": f"mlflow-project:{tmp_path}"}}}
        )
