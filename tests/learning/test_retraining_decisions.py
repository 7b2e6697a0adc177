"""Retraining decisions: periods are counted by the windows' time, not by how often someone
asks, and a forced trigger is answered as the retraining it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.trigger import RetrainingTrigger
from tests.drift.conftest import WindowFactory, wire

HOUR = 3600.0


def _hour(service: DriftService, make_window: WindowFactory, h: int, drift: bool) -> None:
    for d in range(3):
        shift = {"temp_c": 1.5, "humidity": 1.5, "co2_ppm": 1.5} if drift else {}
        w = make_window(f"gw{d}", n=800, seed=100 * h + d, start=h * HOUR + 1, shift=shift)
        assert service.ingest_window(w["device_id"], wire(w)).stored


def test_asking_again_about_the_same_windows_is_not_a_new_period(
    service: DriftService, make_window: WindowFactory
) -> None:
    decider = RetrainingDecider(
        service, RetrainingPolicy(min_consecutive=2, min_samples=1000, cooldown_s=0)
    )
    _hour(service, make_window, 0, drift=True)
    first = decider.decide("barn", since=0, until=HOUR + 1)
    assert first.metrics["consecutive"] == 1 and not first.retrain
    # The same data asked about again, with and without a moving "until": still one period.
    for until in (HOUR + 1, 1.5 * HOUR, 5 * HOUR):
        again = decider.decide("barn", since=0, until=until)
        assert again.metrics["consecutive"] == 1 and not again.retrain, again.reasons
        assert any("hysteresis" in r for r in again.reasons)
    _hour(service, make_window, 1, drift=True)  # a second hour of drifted windows
    second = decider.decide("barn", since=0, until=2 * HOUR + 1)
    assert second.metrics["consecutive"] == 2 and second.retrain, second.reasons


def test_a_forced_trigger_answers_retrain_true(
    tmp_path: Path, service: DriftService, make_window: WindowFactory
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    decider = RetrainingDecider(service, RetrainingPolicy(min_samples=100))
    trig = RetrainingTrigger(decider, client, artifact_location=str(tmp_path / "art"))
    _hour(service, make_window, 0, drift=False)
    d = trig.trigger("barn", since=0, until=HOUR + 1, force=True, reason="new sensors installed")
    assert d.retrain and d.triggered and d.mlflow_run_id
    assert any("forced by operator: new sensors installed" in r for r in d.reasons)
    stored = decider.history("barn")[0]
    assert stored["retrain"] and stored["triggered"], stored
    run: Any = client.get_run(d.mlflow_run_id)
    assert run.data.tags["farmiq.forced"] == "true"
