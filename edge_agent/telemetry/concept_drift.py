"""Concept drift from label feedback: is the model getting worse where ground truth arrives?

Ground truth comes late (birds weighed at the end of the week, a vet's diagnosis), through
``POST /api/v1/feedback`` on the agent. Each (prediction, truth) pair feeds a streaming
detector per model: DDM (Gama et al. 2004) over the 0/1 error stream for classification,
ADWIN (Bifet & Gavalda 2007) over the absolute error for regression. Every change of
detector state (stable -> warning -> drift -> stable) is returned as a ``StateChange`` for
the agent to publish on ``up/drift`` (type ``concept_drift``) through the outbox.

Why not ``from river.drift import ADWIN`` / ``from river.drift.binary import DDM``: the
``river.drift`` package's ``__init__`` imports its datasets and retraining helpers, which
pull pandas, scikit-learn and scipy into the gateway process (measured with river 0.26).
So we use river's compiled ADWIN engine (``river._river_rust.drift.AdaptiveWindowing``,
the exact object ``river.drift.ADWIN`` wraps) directly, and DDM is the ~20-line rule from
``river.drift.binary.DDM`` restated here; tests/drift/test_concept_drift.py checks both
give river's own detections on the same streams.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson


def _adaptive_windowing() -> Any:
    """river's compiled ADWIN engine, imported when the first regression detector is made
    (a gateway serving only classifiers never maps it); None when river is absent: it is
    in the optional `edge-drift` extra (it pulls scipy and pandas)."""
    try:
        from river._river_rust.drift import AdaptiveWindowing
    except ImportError:
        return None
    return AdaptiveWindowing


RIVER_MISSING = (
    "regression feedback (ADWIN) needs river on the gateway: pip install 'farmiq-edge[edge-drift]'"
)

Kind = Literal["classification", "regression"]
DDM_WARM_START = 300
State = Literal["stable", "warning", "drift"]


@dataclass(frozen=True)
class StateChange:
    model: str
    detector: str  # "ddm" | "adwin"
    previous: State
    state: State
    n_seen: int  # feedback items the detector has seen for this model
    estimate: float  # DDM: error rate; ADWIN: mean absolute error in its window
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "concept_drift", **asdict(self)}

    def outbox_key(self, device_id: str) -> str:
        return (
            f"{device_id}/concept/{self.model}/{self.detector}/{self.n_seen}/"
            f"{round(self.at * 1000)}"
        )

    def to_message(self, device_id: str) -> dict[str, Any]:
        """The ``up/drift`` message (queue it with ``outbox.put(topic, json, key)``)."""
        return {**self.to_dict(), "device_id": device_id, "key": self.outbox_key(device_id)}


class DDM:
    """Drift Detection Method on a 0/1 error stream; same rule and defaults as river's DDM."""

    name = "ddm"

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ) -> None:
        self.warm_start = warm_start
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self.drift_detected = False
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.p = 0.0
        self.p_min = math.inf
        self.s_min = math.inf
        self.ps_min = math.inf
        self.warning_detected = False
        self.drift_detected = False

    def update(self, error: bool | int | float) -> None:
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.p += (float(error) - self.p) / self.n  # the running mean river.stats.Mean keeps
        s = math.sqrt(self.p * (1 - self.p) / self.n)
        if self.n > self.warm_start:
            if self.p + s <= self.ps_min:
                self.p_min, self.s_min, self.ps_min = self.p, s, self.p + s
            self.warning_detected = self.p + s > self.p_min + self.warning_threshold * self.s_min
            if self.p + s > self.p_min + self.drift_threshold * self.s_min:
                self.drift_detected = True
                self.warning_detected = False

    @property
    def estimate(self) -> float:
        return self.p


class ADWIN:
    """ADWIN through river's compiled engine, with river.drift.ADWIN's defaults and reset."""

    name = "adwin"
    warning_detected = False

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        self._args: dict[str, Any] = dict(
            delta=delta,
            clock=clock,
            max_buckets=max_buckets,
            min_window_length=min_window_length,
            grace_period=grace_period,
        )
        self.drift_detected = False
        engine = _adaptive_windowing()
        if engine is None:
            raise DetectorUnavailable(RIVER_MISSING)
        self._engine = engine
        self._helper = engine(**self._args)

    def update(self, x: float) -> None:
        if self.drift_detected:
            self._helper = self._engine(**self._args)
        self.drift_detected = bool(self._helper.update(float(x)))

    @property
    def estimate(self) -> float:
        w = self._helper.get_width()
        return self._helper.get_total() / w if w else 0.0


class FeedbackError(ValueError):
    """Bad feedback input; the HTTP layer answers 400 with this message."""


class DetectorUnavailable(FeedbackError):
    """The detector this feedback needs is not installed on this gateway."""


class ConceptDriftMonitor:
    """One detector per model and kind, fed with (prediction, truth) pairs."""

    def __init__(
        self,
        ddm: dict[str, Any] | None = None,
        adwin: dict[str, Any] | None = None,
        max_models: int = 256,
    ) -> None:
        # DDM's own warm start (30) raises false alarms on low error rates: measured, 10
        # false drifts in 30 x 1,000 stable labels at 10% error with 100, one with 300.
        # Ground truth trickles in on farms, so start cautious.
        self._ddm_args = {"warm_start": DDM_WARM_START, **(ddm or {})}
        self._adwin_args = adwin or {}
        self._max_models = max_models
        self._detectors: dict[tuple[str, str], DDM | ADWIN] = {}
        self._state: dict[tuple[str, str], State] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def feedback(
        self, model: str, prediction: Any, truth: Any, kind: Kind = "classification"
    ) -> list[StateChange]:
        """Feed one labelled outcome; returns the detector state changes it caused."""
        if not isinstance(model, str) or not model:
            raise FeedbackError("'model' must be a non-empty string")
        if kind == "classification":
            if isinstance(prediction, float) or isinstance(truth, float):
                # 1.0 vs 1: compare class labels as numbers when both are numeric
                error = float(prediction) != float(truth)
            else:
                error = prediction != truth
            value = 1.0 if error else 0.0
        elif kind == "regression":
            try:
                value = abs(float(prediction) - float(truth))
            except (TypeError, ValueError) as exc:
                raise FeedbackError(
                    "regression feedback needs numeric prediction and truth"
                ) from exc
            if not math.isfinite(value):
                raise FeedbackError("regression feedback must be finite")
        else:
            raise FeedbackError("'kind' must be 'classification' or 'regression'")
        key = (model, kind)
        det = self._detectors.get(key)
        if det is None:
            if len(self._detectors) >= self._max_models:
                raise FeedbackError(f"feedback for more than {self._max_models} models")
            det = DDM(**self._ddm_args) if kind == "classification" else ADWIN(**self._adwin_args)
            self._detectors[key] = det
            self._state[key] = "stable"
            self._seen[key] = 0
        det.update(value)
        self._seen[key] += 1
        new: State = (
            "drift" if det.drift_detected else "warning" if det.warning_detected else "stable"
        )
        old = self._state[key]
        if new == old:
            return []
        self._state[key] = new
        return [
            StateChange(
                model, det.name, old, new, self._seen[key], float(det.estimate), time.time()
            )
        ]

    def status(self) -> dict[str, Any]:
        return {
            f"{m}:{k}": {
                "detector": self._detectors[(m, k)].name,
                "state": s,
                "n_seen": self._seen[(m, k)],
                "estimate": float(self._detectors[(m, k)].estimate),
            }
            for (m, k), s in self._state.items()
        }

    def handle_request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The agent's ``POST /api/v1/feedback`` handler: returns (HTTP status, JSON body).

        Body: ``{"model": "m", "prediction": p, "truth": t, "kind": "classification"}`` or
        ``{"model": "m", "kind": ..., "items": [{"prediction": p, "truth": t}, ...]}``.
        """
        try:
            # orjson refuses nesting deeper than 1024 with a ValueError; the stdlib parser
            # would raise RecursionError on a 5,000-deep body (a 500, issue 18).
            doc = orjson.loads(body)
            if not isinstance(doc, dict):
                raise FeedbackError("body must be a JSON object")
            model = doc.get("model")
            kind = doc.get("kind", "classification")
            items = doc.get("items")
            if items is None:
                if "prediction" not in doc or "truth" not in doc:
                    raise FeedbackError("'prediction' and 'truth' are required")
                items = [{"prediction": doc["prediction"], "truth": doc["truth"]}]
            if not isinstance(items, list) or not items or len(items) > 10_000:
                raise FeedbackError("'items' must be a list of 1..10000 objects")
            changes: list[StateChange] = []
            for it in items:
                if not isinstance(it, dict) or "prediction" not in it or "truth" not in it:
                    raise FeedbackError("each item needs 'prediction' and 'truth'")
                changes += self.feedback(model, it["prediction"], it["truth"], kind)  # type: ignore[arg-type]
        except DetectorUnavailable as exc:  # an optional extra is not installed
            return 501, {"error": str(exc)}
        except FeedbackError as exc:
            return 400, {"error": str(exc)}
        except (ValueError, RecursionError) as exc:  # JSON syntax, nesting
            return 400, {"error": f"invalid JSON: {exc}"}
        return 200, {
            "accepted": len(items),
            "changes": [c.to_dict() for c in changes],
            "status": self.status(),
        }
