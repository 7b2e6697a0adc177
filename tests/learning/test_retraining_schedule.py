"""The retraining schedule decides by itself: drift windows as they are stored, with the
policy's hysteresis (two drifted periods) and latch; a forced retrain on its schedule; a
hook that had too few labels tries again next period instead of latching; a set-up
mistake is one clear error."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.trigger import RetrainingTrigger
from control_plane.learning.retraining_schedule import RetrainingSchedule, ScheduleConfig
from tests.drift.conftest import WindowFactory, wire


class Hook:
    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = results
        self.calls: list[dict[str, Any]] = []

    def __call__(self, payload: Any) -> dict[str, Any]:
        self.calls.append(dict(payload))
        return self.results.pop(0) if self.results else {"ok": True}


@pytest.fixture
def parts(tmp_path: Path, service: DriftService) -> Any:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    decider = RetrainingDecider(service, RetrainingPolicy(min_consecutive=2, min_samples=500))
    return service, decider, client, tmp_path


def _schedule(parts: Any, hook: Hook, **cfg: Any) -> RetrainingSchedule:
    _, decider, client, tmp = parts
    trigger = RetrainingTrigger(decider, client, hook=hook, artifact_location=str(tmp / "runs"))
    config = ScheduleConfig(**{"every_s": 3600.0, "period_s": 120.0, "settle_s": 0.0, **cfg})
    s = RetrainingSchedule(trigger, lambda: ["barn"], create_engine("sqlite://"), config)
    s.start()
    return s


def _wait(pred: Any, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def _store(service: DriftService, w: dict[str, Any], schedule: RetrainingSchedule) -> None:
    res = service.ingest_window(w["device_id"], wire(w))
    assert res.stored and res.models == {"barn"}
    for m in res.models:
        schedule.windows_stored(m)


def test_drifted_windows_trigger_once_after_two_periods(
    parts: Any, make_window: WindowFactory
) -> None:
    service = parts[0]
    hook = Hook([])
    sched = _schedule(parts, hook)
    try:
        now = time.time()
        for i in range(4):  # four drifted periods, each a new window
            before = sched.decisions
            w = make_window("gw-1", seed=i, start=now - 100 + 20 * i, shift={"temp_c": 3.0})
            _store(service, w, sched)
            _wait(lambda b=before: sched.decisions > b, f"decision {i}")  # type: ignore[misc]
            assert len(hook.calls) == (0 if i == 0 else 1), (i, hook.calls)  # latched after
        assert hook.calls[0]["model"] == "barn"
    finally:
        sched.stop()


def test_too_few_labels_try_again_and_the_schedule_forces_a_retrain(
    parts: Any, make_window: WindowFactory
) -> None:
    service, decider = parts[0], parts[1]
    hook = Hook([{"ok": False, "retry": True, "error": "only 10 labelled examples"}])
    sched = _schedule(parts, hook)
    try:
        now = time.time()
        for i in range(3):
            before = sched.decisions
            w = make_window("gw-1", seed=i, start=now - 100 + 20 * i, shift={"temp_c": 3.0})
            _store(service, w, sched)
            _wait(lambda b=before: sched.decisions > b, f"decision {i}")  # type: ignore[misc]
        # period 2: too few labels (not latched); period 3: tried again and trained
        assert len(hook.calls) == 2, hook.calls
    finally:
        sched.stop()
    # with no drift at all, retrain_every_s forces one retrain, then waits its interval
    hook = Hook([])
    sched = _schedule(parts, hook, every_s=0.2, retrain_every_s={"barn": 3600.0})
    try:
        _wait(lambda: sched.decisions >= 1, "the scheduled decision")
        assert hook.calls == []  # the drift retrain above started the interval
    finally:
        sched.stop()
    from control_plane.drift.tables import RetrainingPolicyState

    with service.session() as s, s.begin():
        s.get(RetrainingPolicyState, "barn").last_trigger_at = time.time() - 7200
    sched = _schedule(parts, hook, every_s=0.2, retrain_every_s={"barn": 3600.0})
    try:
        _wait(lambda: len(hook.calls) == 1, "the forced, scheduled retrain")
        time.sleep(0.6)  # three more sweeps
    finally:
        sched.stop()
    assert len(hook.calls) == 1  # not again within the interval
    forced = [d for d in decider.history("barn") if any("forced by schedule" in r
              for r in d["reasons"])]  # fmt: skip
    assert len(forced) == 1 and forced[0]["triggered"], forced


def test_a_bad_schedule_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ScheduleConfig.from_mapping({"evry_s": 3})
    with pytest.raises(ValueError, match="every_s and period_s > 0"):
        ScheduleConfig.from_mapping({"every_s": 0})
    with pytest.raises(ValueError, match="retrain_every_s"):
        ScheduleConfig.from_mapping({"retrain_every_s": {"barn": -1}})
