"""The loop's last mile, on a real control plane's database, registry, signed bundles and
rollout scheduler (its own thread, wired by the rollout area's own set-up): a retrained
candidate that wins on the holdout goes to a shadow wave of the fleet while production
stays; gateways acknowledge the shadow install (as ``up/install`` would) and send
labelled feedback; the shadow gate compares champion and challenger on that feedback,
and only a challenger that wins by the margin is promoted, after which the rollout's
install wave carries it to the fleet. A candidate that loses in the shadow wave (the barn
went back to normal) is rejected there: production and the gateways stay on v1. With
approval, nothing rolls out until an operator promotes; then the rollout starts by itself.

Gateways are the rollout ingest fed the messages a gateway sends, not agent processes:
tests/rollout/test_shadow_and_probation.py covers real agents in shadow waves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.context import ControlPlaneContext, build_context
from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.trigger import Alerts, RetrainingTrigger
from control_plane.learning.examples import ExampleStore
from control_plane.learning.setup import learning_hook
from control_plane.rollout.ingest import RolloutIngest
from control_plane.security.audit_log import query_audit
from control_plane.settings import ControlPlaneSettings
from control_plane.tables import Device
from farmiq.drift_reference import build_reference
from tests.learning.test_learning_loop import FEATURES, HOUR, LABELS, T0, _gateway_hour, world

DEVICES = [f"gw-shadow-{i}" for i in range(6)]


@pytest.fixture
def plane(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A control plane whose registry serves v1 of the model named by the test's
    ``indirect`` parameter, and a six-gateway fleet running it."""
    model = request.param
    import mlflow
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    monkeypatch.setenv("FARMIQ_ROLLOUT_TICK_S", "0.1")
    ctx = build_context(
        ControlPlaneSettings(data_dir=tmp_path / "cp", mqtt={"enabled": False})  # type: ignore[arg-type]
    )
    drift = DriftService(ctx.engine)
    drift.create_tables()
    X, y = world(3000, seed=1, shifted=False)
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    ref = build_reference(
        {f: X[:, i] for i, f in enumerate(FEATURES)},
        prediction=v1.predict(X),
        prediction_categorical=True,
    )
    ctx.registry.client.create_experiment("ds", artifact_location=(tmp_path / "ds").as_uri())
    mlflow.set_experiment("ds")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            v1, name="model", input_example=X[:3], pip_requirements=["scikit-learn"]
        )
    meta = {"labels": LABELS, "feature_names": FEATURES}
    mv = ctx.registry.register_uri(model, f"runs:/{run.info.run_id}/model", meta=meta)
    ctx.registry.promote(model, mv.version)
    drift.set_reference(model, ref)
    with ctx.session() as s:  # the fleet, each gateway serving v1
        for d in DEVICES:
            s.add(
                Device(device_id=d, status="online", reported={"models": {model: {"version": 1}}})
            )
    common = {
        "lookback_s": HOUR, "auto_rollout": True, "rollout_waves": [100],
        "rollout_soak_s": 0.5, "shadow_min_feedback": 150,
    }  # fmt: skip
    cfg = {
        "learning": {
            "models": {
                "barn": {**common, "shadow_percent": 50, "promotion": {"margin": 0.05}},
                "barn-back": {**common, "shadow_percent": 50, "promotion": {"margin": 0.05}},
                "barn-approve": {**common, "promotion": {"margin": 0.05, "approval": True}},
                "barn-worse": {
                    **common,
                    "shadow_percent": 50,
                    "promotion": {"margin": 0.0},
                    "entrypoint": "tests.learning.test_learning_loop:flipped_labels",
                },
            }
        }
    }
    alerts: list[dict[str, Any]] = []
    sink = Alerts(lambda t, b: alerts.append(json.loads(b)))
    loop = learning_hook(ctx, cfg, sink)
    assert loop is not None and ctx.services["learning"] is loop
    from control_plane.rollout import setup as rollout_setup

    rollout_setup.setup(ctx)  # wires the loop's shadow gate and listener into the scheduler
    decider = RetrainingDecider(drift, RetrainingPolicy(min_consecutive=2, min_samples=1000))
    trigger = RetrainingTrigger(decider, ctx.registry.client, hook=loop, alerts=sink)
    examples = ExampleStore(ctx.engine)
    yield ctx, drift, examples, trigger, v1, ref, alerts
    ctx.services["rollouts"].sch.stop()
    ctx.close()


def _retrain(plane: Any, model: str) -> dict[str, Any]:
    _, drift, examples, trigger, v1, ref, _ = plane
    decision = None
    for h in range(2):
        _gateway_hour(drift, examples, model, v1, ref, h)
        decision = trigger.trigger(model, since=T0 + h * HOUR, until=T0 + (h + 1) * HOUR)
    assert decision is not None and decision.triggered, decision
    assert decision.hook_result and decision.hook_result["ok"], decision.hook_result
    return decision.hook_result  # type: ignore[no-any-return]


def _wait(ctx: ControlPlaneContext, rid: str, pred: Callable[[dict[str, Any]], bool]) -> Any:
    service = ctx.services["rollouts"]
    deadline = time.time() + 60
    while time.time() < deadline:
        doc = service.get(rid)
        if pred(doc):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"rollout {rid} never got there: {doc}")


def _ack_installs(ctx: ControlPlaneContext, rid: str, wave: int) -> list[str]:
    """The wave's gateways install what they were sent and say so on up/install."""
    service = ctx.services["rollouts"]
    ingest = RolloutIngest(ctx.db, ctx.services["rollout_transfers"])
    doc = _wait(ctx, rid, lambda d: d["waves"][wave]["devices"].get("sent", 0) > 0)
    sent = [
        d["device_id"] for d in service.devices(rid) if d["wave"] == wave and d["status"] == "sent"
    ]
    for device in sent:
        ack = {"ok": True, "rollout": rid, "version": doc["version"], "bundle_id": doc["bundle_id"]}
        ingest.on_install(device, json.dumps(ack).encode())
    return sent


def _shadow_feedback(examples: ExampleStore, model: str, devices: list[str], shifted: bool) -> None:
    """Farmers label what the shadow gateways served during the shadow period."""
    for i, device in enumerate(devices):
        X, y = world(200, seed=500 + i, shifted=shifted)
        now = time.time()
        batch = {
            "type": "feedback_batch",
            "model": model,
            "examples": [
                {"ts": now + j * 1e-3, "inputs": X[j].tolist(), "truth": LABELS[int(y[j])]}
                for j in range(len(X))
            ],
        }
        assert examples.ingest(device, batch) == len(X)


def _gate(doc: dict[str, Any], wave: int) -> dict[str, Any]:
    return {c["name"]: c for c in doc["waves"][wave]["gate"]["checks"]}


@pytest.mark.parametrize("plane", ["barn"], indirect=True)
def test_a_winner_shadows_on_the_fleet_then_is_promoted_and_rolled_out(plane: Any) -> None:
    ctx, _, examples, _, _, _, alerts = plane
    result = _retrain(plane, "barn")
    assert result["status"] == "shadowing", result
    rid, v2 = result["rollout"], result["candidate_version"]
    assert rid and v2 == 2
    assert ctx.registry.resolve("barn").version == 1  # production waits for the shadow
    assert ctx.registry.resolve("barn", alias="challenger").version == 2

    doc = _wait(ctx, rid, lambda d: d["status"] in ("running", "soaking"))
    assert [w["mode"] for w in doc["waves"]] == ["shadow", "install"]
    assert doc["gates"]["min_shadow_agreement"] is None  # agreement with a drifted champion
    shadow = _ack_installs(ctx, rid, 0)
    assert 0 < len(shadow) < len(DEVICES)
    doc = _wait(ctx, rid, lambda d: (d["waves"][0]["gate"] or {}).get("waiting") is not None)
    assert ctx.registry.resolve("barn").version == 1  # no feedback yet: no verdict

    _shadow_feedback(examples, "barn", shadow[:1], shifted=True)  # one batch: one verdict
    doc = _wait(ctx, rid, lambda d: d["waves"][0]["status"] == "succeeded")
    gate = _gate(doc, 0)["feedback_accuracy"]
    assert gate["passed"] and gate["value"] >= gate["threshold"] + 0.05, gate
    _wait(ctx, rid, lambda d: d["current_wave"] == 1)
    deadline = time.time() + 30
    while ctx.registry.resolve("barn").version != 2 and time.time() < deadline:
        time.sleep(0.1)
    assert ctx.registry.resolve("barn").version == 2  # promoted on the shadow's verdict

    _ack_installs(ctx, rid, 1)
    doc = _wait(ctx, rid, lambda d: d["status"] == "succeeded")
    assert doc["devices"] == {"installed": len(DEVICES)}

    kinds = [(a["kind"], a["model"]) for a in alerts]
    for kind in ("candidate_shadowing", "learning_rollout_started", "candidate_promoted"):
        assert (kind, "barn") in kinds, kinds
    audited = {(e.action, e.target) for e in query_audit(ctx.engine, actor="learning-loop")}
    assert {
        ("learning.candidate_shadowing", "barn/v2"),
        ("learning.learning_rollout_started", "barn/v2"),
        ("learning.candidate_promoted", "barn/v2"),
    } <= audited


@pytest.mark.parametrize("plane", ["barn-back"], indirect=True)
def test_a_candidate_that_loses_in_the_shadow_wave_is_never_promoted(plane: Any) -> None:
    ctx, _, examples, _, _, _, alerts = plane
    result = _retrain(plane, "barn-back")
    assert result["status"] == "shadowing", result  # it won on the drift period's holdout
    rid = result["rollout"]
    shadow = _ack_installs(ctx, rid, 0)
    _shadow_feedback(examples, "barn-back", shadow[:1], shifted=False)  # the barn went back
    doc = _wait(ctx, rid, lambda d: d["status"] in ("paused", "failed", "succeeded"))
    assert doc["status"] == "paused" and doc["waves"][0]["status"] == "failed", doc
    assert doc["waves"][1]["status"] == "pending"  # the install wave never ran
    gate = _gate(doc, 0)["feedback_accuracy"]
    assert not gate["passed"] and gate["value"] < gate["threshold"] + 0.05, gate
    assert "feedback_accuracy" in doc["reason"]
    time.sleep(0.5)
    assert ctx.registry.resolve("barn-back").version == 1
    devices = ctx.services["rollouts"].devices(rid)
    assert {d["status"] for d in devices if d["wave"] == 0} <= {"rolling_back", "rolled_back"}
    assert ("candidate_rejected", "barn-back") in [(a["kind"], a["model"]) for a in alerts]
    audited = {(e.action, e.target) for e in query_audit(ctx.engine, actor="learning-loop")}
    assert ("learning.candidate_rejected", "barn-back/v2") in audited
    assert ("learning.candidate_promoted", "barn-back/v2") not in audited


@pytest.mark.parametrize("plane", ["barn-approve"], indirect=True)
def test_an_approved_candidate_rolls_out_by_itself_and_a_waiting_one_does_not(
    plane: Any,
) -> None:
    ctx = plane[0]
    result = _retrain(plane, "barn-approve")
    assert result["status"] == "awaiting-approval" and result["rollout"] is None, result
    service = ctx.services["rollouts"]
    assert service.list_rollouts() == []
    assert ctx.registry.resolve("barn-approve").version == 1
    # the operator approves (PUT /api/v1/models/{name}/promote does exactly this)
    ctx.registry.promote("barn-approve", 2)
    ctx.promoted("barn-approve", 2)
    [rollout] = service.list_rollouts()
    assert rollout["model"] == "barn-approve" and rollout["version"] == 2
    doc = service.get(rollout["id"])
    assert [w["mode"] for w in doc["waves"]] == ["install"]
    _ack_installs(ctx, rollout["id"], 0)
    assert _wait(ctx, rollout["id"], lambda d: d["status"] == "succeeded")
    audited = {(e.action, e.target) for e in query_audit(ctx.engine, actor="learning-loop")}
    assert ("learning.learning_rollout_started", "barn-approve/v2") in audited


@pytest.mark.parametrize("plane", ["barn-worse"], indirect=True)
def test_a_worse_candidate_starts_no_rollout(plane: Any) -> None:
    ctx, alerts = plane[0], plane[-1]
    result = _retrain(plane, "barn-worse")
    assert result["status"] == "rejected" and result["rollout"] is None, result
    assert not result["comparison"]["wins"]
    time.sleep(0.3)
    assert ctx.services["rollouts"].list_rollouts() == []
    assert ctx.registry.resolve("barn-worse").version == 1
    kinds = {a["kind"] for a in alerts if a["model"] == "barn-worse"}
    assert "candidate_rejected" in kinds and "learning_rollout_started" not in kinds


def test_no_rollout_without_auto_rollout_and_bad_rollout_config_is_refused() -> None:
    from control_plane.learning.loop import LearningConfig

    cfg = LearningConfig.from_mapping({"models": {"m": {}}}).models["m"]
    assert cfg.auto_rollout is False and cfg.shadow_percent is None
    for bad in ({"rollout_waves": [50, 10]}, {"rollout_waves": [10, 50]}, {"shadow_percent": 0}):
        with pytest.raises(ValueError, match="learning config"):
            LearningConfig.from_mapping({"models": {"m": bad}})
