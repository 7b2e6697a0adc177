"""The whole learning loop on real processes, with no human after set-up (issue 15):

a control plane and two gateway agents over the machine's Mosquitto; the barn's world
shifts (hotter, and a new breed that reacts to ammonia more than heat) in the traffic the
gateways serve and in the labels farmers send them. Nobody calls an API of the loop: the
gateways' drift windows reach the control plane, the retraining schedule judges them as
they arrive (hysteresis: two drifted periods), the trigger trains the model's entrypoint
on the labelled examples the gateways uploaded through their outboxes, the candidate wins
on the holdout, goes to a shadow wave on one gateway, beats production there on the
labelled feedback by the margin, is promoted and rolled out to both gateways. A second
model whose training entrypoint is broken gets a worse candidate: it is registered, never
promoted, and the gateways keep serving its first version."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from farmiq.drift_reference import build_reference
from tests.learning.test_learning_loop import FEATURES, LABELS, world
from tests.support.procs import AgentProc, ControlPlaneProc

MODEL, WORSE = "barn-loop", "barn-loop-worse"
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
                MODEL: {**common, "promotion": {"margin": 0.05, "min_holdout": 200}},
                WORSE: {
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
        for name in (MODEL, WORSE):
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
        for model in (MODEL, WORSE):
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
    loop_plane: ControlPlaneProc, agent_factory: Callable[..., AgentProc], device_id: str
) -> None:
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
        for name in (MODEL, WORSE):
            r = c.post("/api/v1/rollouts", json={
                "model": name, "version": 1, "targeting": {"devices": devices},
                "waves": [{"percent": 100}], "soak_s": 0.2})  # fmt: skip
            assert r.status_code == 200, r.text
    for a in agents:
        a.wait_for(
            lambda s: all(s["state"]["models"].get(m, {}).get("version") == 1 for m in (MODEL, WORSE)),
            60, "v1 of both models",
        )  # fmt: skip

    # From here on, only the barn: shifted traffic and the farmers' labels.
    deadline, step = time.time() + 360, 0
    while time.time() < deadline:
        _serve_the_shifted_barn(agents, step)
        step += 1
        if all(a.installed_version(MODEL) == 2 for a in agents):
            break
        time.sleep(0.3)
    good = _model(cp, MODEL)
    assert good["aliases"].get("production") == 2, good  # promoted with no human
    assert all(a.installed_version(MODEL) == 2 for a in agents), [
        a.get("/api/v1/status").json()["state"]["models"] for a in agents
    ]

    with cp.client() as c:
        decisions = c.get(f"/api/v1/retraining/decisions/{MODEL}").json()
        for _ in range(200):  # the last wave's soak
            rollouts = c.get("/api/v1/rollouts").json()["rollouts"]
            mine = [r for r in rollouts if r["model"] == MODEL and r["version"] == 2]
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
    worse = _model(cp, WORSE)
    assert worse["latest_version"] == 2, worse
    assert worse["aliases"].get("production") == 1, worse
    assert not any(r["model"] == WORSE and r["version"] == 2 for r in rollouts)
    assert all(a.installed_version(WORSE) == 1 for a in agents)
