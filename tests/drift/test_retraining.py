"""Retraining policy (cooldown, hysteresis, stored reasons), trigger (MLflow run + command
hook) and the operator API."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.trigger import CommandHook, RetrainingTrigger
from tests.drift.conftest import WindowFactory, wire

HOUR = 3600.0


def _hour(service: DriftService, make_window: WindowFactory, h: int, drift: bool) -> None:
    for d in range(3):
        shift = {"temp_c": 1.0, "humidity": 1.0, "co2_ppm": 1.0} if drift else {}
        w = make_window(f"gw{d}", n=800, seed=100 * h + d, start=h * HOUR + 1, shift=shift)
        assert service.ingest_window(w["device_id"], wire(w)).stored


def _decide(decider: RetrainingDecider, h: int) -> Any:
    return decider.decide("barn", since=h * HOUR, until=(h + 1) * HOUR)


def test_hysteresis_cooldown_and_reasons(service: DriftService, make_window: WindowFactory) -> None:
    now = [0.0]
    decider = RetrainingDecider(
        service,
        RetrainingPolicy(min_consecutive=2, cooldown_s=6 * HOUR, min_samples=1000),
        clock=lambda: now[0],
    )
    for h in range(8):
        _hour(service, make_window, h, drift=h in (1, 2, 3, 4, 6, 7))
    results = []
    for h in range(8):
        now[0] = (h + 1) * HOUR
        d = _decide(decider, h)
        if d.retrain:
            decider.mark_triggered(d, None, None)
        results.append(d)
    assert [d.retrain for d in results] == [False, False, True, False, False, False, False, False]
    assert "no drift signal" in results[0].reasons[0]
    assert any("hysteresis" in r for r in results[1].reasons)  # one noisy hour is not enough
    assert any("already triggered" in r for r in results[3].reasons)  # latched
    # hour 5 clears the episode; 6-7 drift again, but the 6 h cooldown (trigger at 3 h) holds
    assert any("cooldown" in r for r in results[7].reasons)
    assert results[2].metrics["drifted_features"] == ["temp_c", "humidity", "co2_ppm"]
    stored = decider.history("barn")
    assert len(stored) == 8 and stored[-1]["reasons"] == results[0].reasons
    # Deciding twice on the same period does not count as two periods.
    assert _decide(decider, 7).metrics["consecutive"] == results[7].metrics["consecutive"]


def test_too_few_samples_never_retrain(service: DriftService, make_window: WindowFactory) -> None:
    w = make_window("gw", n=150, seed=3, start=1.0, shift={"temp_c": 2.0, "humidity": 2.0})
    service.ingest_window("gw", wire(w))
    decider = RetrainingDecider(service, RetrainingPolicy(min_consecutive=1, min_samples=1000))
    d = decider.decide("barn", since=0, until=HOUR)
    assert not d.retrain and any("only 150 rows" in r for r in d.reasons)


@pytest.fixture
def mlflow_client(tmp_path: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_trigger_records_mlflow_run_and_calls_the_hook(
    tmp_path: Path,
    service: DriftService,
    make_window: WindowFactory,
    mlflow_client: Any,
) -> None:
    out = tmp_path / "hook.json"
    hook = CommandHook(
        [
            sys.executable,
            "-c",
            f"import sys, os; open({str(out)!r}, 'w').write(sys.stdin.read()"
            " + os.environ['FARMIQ_RETRAIN_MODEL'])",
        ]
    )
    sent: list[tuple[str, bytes]] = []
    from control_plane.drift.trigger import Alerts

    decider = RetrainingDecider(service, RetrainingPolicy(min_consecutive=1, min_samples=100))
    trig = RetrainingTrigger(
        decider,
        mlflow_client,
        hook=hook,
        alerts=Alerts(publish=lambda t, b: sent.append((t, b))),
        artifact_location=str(tmp_path / "art"),
    )
    _hour(service, make_window, 0, drift=False)
    quiet = trig.trigger("barn", since=0, until=HOUR)
    assert not quiet.retrain and quiet.mlflow_run_id is None and not out.exists()
    _hour(service, make_window, 1, drift=True)
    d = trig.trigger("barn", since=HOUR, until=2 * HOUR)
    assert d.retrain and d.triggered and d.hook_result and d.hook_result["ok"]
    text = out.read_text()
    assert text.endswith("barn") and json.loads(text[:-4])["mlflow_run_id"] == d.mlflow_run_id
    run = mlflow_client.get_run(d.mlflow_run_id)
    assert run.data.tags["farmiq.model"] == "barn"
    assert run.data.metrics["drift_share"] == pytest.approx(3 / 7)  # 3 of 7 inputs
    assert run.info.status == "FINISHED"
    # Alerts (control_plane/alerts/model.py): drift, then retraining decided/started/finished.
    by_topic = {t: json.loads(b) for t, b in sent}
    assert list(by_topic)[:1] == ["farmiq/v1/cp/alert/drift"]
    assert {
        "farmiq/v1/cp/alert/retraining_decided",
        "farmiq/v1/cp/alert/retraining_started",
    } <= set(by_topic)
    finished = by_topic["farmiq/v1/cp/alert/retraining_finished"]
    assert finished["details"]["mlflow_run_id"] == d.mlflow_run_id
    assert finished["details"]["hook_ok"] is True and finished["model"] == "barn"


def test_api_endpoints(
    tmp_path: Path,
    service: DriftService,
    make_window: WindowFactory,
    reference: dict[str, Any],
    mlflow_client: Any,
) -> None:
    from control_plane.api import drift as api
    from control_plane.drift.setup import build_area

    ctx = SimpleNamespace(
        engine=service.engine, mlflow=mlflow_client, data_dir=tmp_path, services={}, mqtt=None
    )
    ctx.services["drift"] = build_area(ctx, {"policy": {"min_consecutive": 1, "min_samples": 100}})
    app = FastAPI()
    app.include_router(api.router)
    app.state.ctx = ctx
    c = TestClient(app)
    r = c.post("/api/v1/drift/reference", json={"model": "barn2", "reference": reference})
    assert r.status_code == 200 and r.json()["schema"]
    bad = c.post("/api/v1/drift/reference", json={"model": "x", "reference": {"features": {}}})
    assert bad.status_code == 422
    w = make_window("gw9", n=1000, seed=9, start=10.0, shift={"temp_c": 1.5})
    w.pop("_raw")
    ctx.services["drift"].service.ingest_window("gw9", wire(w))
    period = {"model": "barn", "since": 0, "until": HOUR}
    r = c.post("/api/v1/detect/check", json={**period, "method": "psi", "feature": "temp_c"})
    assert r.status_code == 200
    assert r.json()["groups"][0]["features"]["temp_c"]["status"] == "drift"
    r = c.post("/api/v1/detect/comprehensive", json={**period, "level": "device"}).json()
    assert r["drift_detected"] and r["groups"][0]["drifted_features"] == ["temp_c"]
    assert r["thresholds"]["methods"]["psi"] == {"warn": 0.1, "drift": 0.2}
    d = c.post("/api/v1/retraining/decision", json=period).json()
    # one feature of seven, but shifted 1.5 std: the severity rule fires
    assert d["retrain"] is True and any("max PSI" in x for x in d["reasons"])
    t = c.post("/api/v1/retraining/trigger", json={**period, "force": True, "reason": "vet"})
    assert t.status_code == 200 and t.json()["mlflow_run_id"]
    models = {m["model"]: m for m in c.get("/api/v1/drift/models").json()}
    assert models["barn2"]["status"] == "no_data"
    assert c.post("/api/v1/detect/check", json={"model": "nope"}).status_code == 404
    html = c.get("/api/v1/drift/report/barn", params={"since": 0, "until": HOUR})
    assert html.status_code == 200 and "<html" in html.text.lower()
    # The body says what the report is: model, version, rows and period.
    facts = html.text[html.text.index("farmiq-report-facts") :][:3000]
    assert "data-fact='model'>barn<" in facts and "data-fact='reference version'" in facts
    assert re.search(r"data-fact='gateway rows'>[1-9]\d*<", facts)
    assert "1970-01-01T00:00:00+00:00 to 1970-01-01T01:00:00+00:00" in facts
