"""The closed loop with no human: a barn's world shifts (hotter, and a new breed that
reacts to ammonia more than heat), the gateways' drift windows and labelled feedback
report it, the policy's hysteresis lets the second drifted hour through, the trigger runs
the model's training entrypoint as an MLflow run, the candidate is registered with its
lineage and promoted because it beats production on the shifted data by the margin. A
worse candidate is registered but never promoted. The last test runs the same loop on real
processes: gateway agents and a control plane over Mosquitto, with no human after set-up."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
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
from farmiq import topics
from farmiq.drift_reference import build_reference
from tests.support.procs import AgentProc, ControlPlaneProc

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
    """A training entrypoint with a bug (an off-by-one: each label becomes the next class):
    the candidate it makes is wrong wherever it learned, so it loses to production on any
    holdout. (Reversing the order instead kept the middle class right, and on a holdout
    heavy in it the bug could tie a production model that the shift had made poor.)"""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(data.X, (data.y + 1) % 3)


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


# -- the whole loop on real processes ------------------------------------------------------
# A control plane and two gateway agents over the machine's Mosquitto; the barn's world
# shifts in the traffic the gateways serve and in the labels farmers send them. Nobody
# calls an API of the loop: the gateways' drift windows reach the control plane, the
# retraining schedule judges them as they arrive (hysteresis: two drifted periods), the
# trigger trains the model's entrypoint on the labelled examples the gateways uploaded
# through their outboxes, the candidate wins on the holdout, goes to a shadow wave on one
# gateway, beats production there on the labelled feedback by the margin, is promoted and
# rolled out to both gateways. A second model whose training entrypoint is broken gets a
# worse candidate: it is registered, never promoted, and the gateways keep its first
# version.

LIVE_MODEL, LIVE_WORSE = "barn-loop", "barn-loop-worse"
WINDOW_S = 2.0


def _v1_onnx() -> tuple[bytes, dict[str, Any]]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = world(3000, seed=1, shifted=False)
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    onx = to_onnx(v1, X[:1], options={LogisticRegression: {"zipmap": False}})
    ref = build_reference(
        {f: X[:, i] for i, f in enumerate(FEATURES)},
        prediction=v1.predict(X),
        prediction_categorical=True,
    )
    return onx.SerializeToString(), ref


@pytest.fixture
def loop_plane(tmp_path: Path, mqtt_port: int) -> Any:
    common = {
        "auto_rollout": True, "rollout_waves": [100], "rollout_soak_s": 1,
        "shadow_percent": 50, "shadow_min_feedback": 150, "min_rows": 900,
        "lookback_s": 60,
    }  # fmt: skip
    config = {
        "policy": {"min_consecutive": 2, "min_samples": 300, "cooldown_s": 3600},
        # judged as windows arrive (settle 1 s) over the last two windows' worth of time
        "schedule": {"every_s": 3600, "period_s": 2 * WINDOW_S, "settle_s": 1.0},
        "learning": {
            "models": {
                LIVE_MODEL: {**common, "promotion": {"margin": 0.05, "min_holdout": 200}},
                LIVE_WORSE: {
                    **common, "promotion": {"margin": 0.0},
                    "entrypoint": "tests.learning.test_learning_loop:flipped_labels",
                },
            }
        },
    }  # fmt: skip
    (tmp_path / "drift.json").write_text(json.dumps(config))
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port)
    cp.env = {
        **cp.env,
        "FARMIQ_DRIFT_CONFIG": str(tmp_path / "drift.json"),
        "FARMIQ_ROLLOUT_TICK_S": "0.2",
    }
    cp.start()
    onnx, ref = _v1_onnx()
    meta = {"labels": LABELS, "feature_names": FEATURES, "task": "classification"}
    with cp.client() as c:
        for name in (LIVE_MODEL, LIVE_WORSE):
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", onnx), "reference": ("ref.json", json.dumps(ref))},
                data={"name": name, "meta": json.dumps(meta)},
            )
            assert r.status_code == 200, r.text
            r = c.put(f"/api/v1/models/{name}/promote", json={"version": r.json()["version"]})
            assert r.status_code == 200, r.text
    yield cp
    cp.stop()


def _serve_the_shifted_barn(agents: list[AgentProc], step: int) -> None:
    """One round of the shifted world through each gateway: 60 answers per model, and
    the farmers' labels for them (with the inputs, so they are training examples)."""
    for i, agent in enumerate(agents):
        X, y = world(60, seed=10_000 + 100 * step + i, shifted=True)
        for model in (LIVE_MODEL, LIVE_WORSE):
            r = httpx.post(f"{agent.url}/api/v1/inference",
                           json={"model": model, "inputs": X.tolist(), "cache": False},
                           timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            pred = np.asarray(next(iter(r.json()["outputs"].values()))).reshape(len(X), -1)
            labels = [LABELS[int(p)] for p in (pred.argmax(1) if pred.shape[1] > 1 else pred[:, 0])]
            items = [
                {"prediction": labels[j], "truth": LABELS[int(y[j])], "inputs": X[j].tolist()}
                for j in range(len(X))
            ]
            r = httpx.post(f"{agent.url}/api/v1/feedback", timeout=30,
                           json={"model": model, "kind": "classification", "items": items})  # fmt: skip
            assert r.status_code == 200, r.text


def _model(cp: ControlPlaneProc, name: str) -> dict[str, Any]:
    with cp.client() as c:
        return c.get(f"/api/v1/models/{name}").json()  # type: ignore[no-any-return]


@pytest.mark.timeout(480)
def test_a_shift_on_live_gateways_retrains_shadows_and_rolls_out_with_no_human(
    loop_plane: ControlPlaneProc,
    agent_factory: Callable[..., AgentProc],
    device_id: str,
    mqtt_port: int,
) -> None:
    import paho.mqtt.client as mqtt

    cp = loop_plane
    agents = [
        agent_factory(
            f"{device_id}-{i}",
            cp.trust_root(),
            drift={"window_s": WINDOW_S, "outbox_ack_timeout_s": 5.0},
            rollout={"probation_s": 0.5, "health_interval_s": 1.0, "shadow_report_s": 0.5},
        )
        for i in range(2)
    ]
    devices = [a.device_id for a in agents]
    with cp.client() as c:  # the operator's last act: v1 of both models on both gateways
        for name in (LIVE_MODEL, LIVE_WORSE):
            r = c.post("/api/v1/rollouts", json={
                "model": name, "version": 1, "targeting": {"devices": devices},
                "waves": [{"percent": 100}], "soak_s": 0.2})  # fmt: skip
            assert r.status_code == 200, r.text
    for a in agents:
        a.wait_for(
            lambda s: all(s["state"]["models"].get(m, {}).get("version") == 1 for m in (LIVE_MODEL, LIVE_WORSE)),
            60, "v1 of both models",
        )  # fmt: skip

    # From here on, only the barn: shifted traffic and the farmers' labels.
    # The alerts an operator would watch: the broken entrypoint's candidate is rejected.
    rejected: list[dict[str, Any]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-alerts-{device_id}")
    sub.on_message = lambda _c, _u, msg: rejected.append(json.loads(msg.payload))
    sub.connect("127.0.0.1", mqtt_port)
    sub.subscribe(topics.cp_alert("candidate_rejected"), qos=1)
    sub.loop_start()

    def done() -> bool:
        worse_judged = any(a.get("model") == LIVE_WORSE for a in rejected)
        return worse_judged and all(a.installed_version(LIVE_MODEL) == 2 for a in agents)

    deadline, step = time.time() + 360, 0
    try:
        while time.time() < deadline:
            _serve_the_shifted_barn(agents, step)
            step += 1
            if done():
                break
            time.sleep(0.3)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert any(a.get("model") == LIVE_WORSE for a in rejected), rejected
    good = _model(cp, LIVE_MODEL)
    assert good["aliases"].get("production") == 2, good  # promoted with no human
    assert all(a.installed_version(LIVE_MODEL) == 2 for a in agents), [
        a.get("/api/v1/status").json()["state"]["models"] for a in agents
    ]

    with cp.client() as c:
        decisions = c.get(f"/api/v1/retraining/decisions/{LIVE_MODEL}?limit=1000").json()
        for _ in range(200):  # the last wave's soak
            rollouts = c.get("/api/v1/rollouts").json()["rollouts"]
            mine = [r for r in rollouts if r["model"] == LIVE_MODEL and r["version"] == 2]
            if mine and mine[0]["status"] not in ("running", "soaking", "pending"):
                break
            time.sleep(0.1)
    fired = [d for d in decisions if d["triggered"]]
    # triggered by the policy (a trigger while too few labels had arrived tries again)
    assert fired and all(d["retrain"] for d in fired), decisions
    assert any("hysteresis" in " ".join(d["reasons"]) for d in decisions)  # waited a period
    assert good["latest_version"] == 2, good  # one candidate: trained once
    v2 = next(v for v in good["versions"] if v["version"] == 2)
    lineage = v2["meta"].get("lineage", {})
    assert lineage.get("parent_version") == 1, lineage  # lineage: what it replaced
    assert len(mine) == 1 and mine[0]["status"] == "succeeded", mine
    with cp.client() as c:
        waves = c.get(f"/api/v1/rollouts/{mine[0]['id']}").json()["waves"]
    assert waves[0]["mode"] == "shadow" and waves[0]["status"] == "succeeded", waves
    gate = {ch["name"]: ch for ch in waves[0]["gate"]["checks"]}
    assert gate["feedback_accuracy"]["passed"], gate  # it beat production on farmers' labels

    # the broken entrypoint's candidate: registered, never promoted, never on a gateway
    worse = _model(cp, LIVE_WORSE)
    assert worse["latest_version"] == 2, worse
    assert worse["aliases"].get("production") == 1, worse
    assert not any(r["model"] == LIVE_WORSE and r["version"] == 2 for r in rollouts)
    assert all(a.installed_version(LIVE_WORSE) == 1 for a in agents)
