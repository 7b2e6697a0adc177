"""The learning loop behind a retraining trigger: train, register, compare, promote.

``LearningLoop`` is a retraining hook (``control_plane.drift.trigger.Hook``): the trigger
calls it with the decision (model, data window, decision id) after the policy's
hysteresis and cooldown said retrain. It

1. takes the labelled examples of the drift period (``ExampleStore``) and splits off a
   holdout;
2. runs the model's training entrypoint (``module:function``) as an MLflow run in the
   experiment ``farmiq-training``: parameters, the training dataset (``mlflow.log_input``
   of a CSV artifact), the drift reference of the training data, the model with its
   signature and input example, its training metric, and tags naming the parent version,
   the data window and the decision;
3. registers the run's model as a candidate through the registry (intake, the gateway
   gate, lineage: parent version and data window reach the bundle manifest);
4. scores champion (production) and challenger on the holdout, each run in the gateway
   runtime on its registered bytes;
5. promotes the challenger to ``production`` only when it wins by the model's margin on
   enough rows (or, with ``approval``, points the ``challenger`` alias at it for an
   operator); otherwise production stays where it is.

Each step is logged on the training run and ends in an alert and an audit-log entry
(actor ``learning-loop``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.learning.champion import (
    PromotionPolicy,
    compare,
    predictions,
    score,
)
from control_plane.learning.entrypoint import (
    TrainingData,
    check_entrypoint,
    is_project,
    load_entrypoint,
    run_project,
)
from control_plane.learning.examples import ExampleStore
from control_plane.model_registration import calibrate_version

log = logging.getLogger(__name__)

EXPERIMENT = "farmiq-training"
DEFAULT_ENTRYPOINT = "control_plane.learning.entrypoint:standardized_logistic"


@dataclass(frozen=True)
class ModelLearning:
    entrypoint: str = DEFAULT_ENTRYPOINT
    params: dict[str, Any] = field(default_factory=dict)
    lookback_s: float = 0.0  # also train on this much before the drift period
    holdout_fraction: float = 0.3
    min_rows: int = 300
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)
    # After promotion (or an operator's approval), a staged rollout starts by itself.
    auto_rollout: bool = False
    rollout_waves: list[float] = field(default_factory=lambda: [10.0, 50.0, 100.0])
    rollout_soak_s: float = 300.0
    rollout_wave_timeout_s: float = 1800.0
    # With auto_rollout: first a shadow wave on this share of the gateways; production
    # moves only when the candidate beats it there on labelled feedback by the margin.
    shadow_percent: float | None = None
    shadow_min_feedback: int = 200  # labelled rows from the shadow gateways to judge on

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> ModelLearning:
        doc = dict(doc)
        promo = doc.pop("promotion", {}) or {}
        unknown = set(doc) - set(cls.__dataclass_fields__)
        bad_promo = set(promo) - set(PromotionPolicy.__dataclass_fields__)
        if unknown or bad_promo:
            raise ValueError(f"learning config: unknown keys {sorted(unknown | bad_promo)}")
        cfg = cls(**doc, promotion=PromotionPolicy(**promo))
        check_entrypoint(cfg.entrypoint)  # a bad entrypoint is a set-up error, said now
        if not 0 < cfg.holdout_fraction < 1:
            raise ValueError("learning config: holdout_fraction must be in (0, 1)")
        waves = list(cfg.rollout_waves)
        if not waves or waves != sorted(waves) or waves[-1] != 100 or waves[0] <= 0:
            raise ValueError("learning config: rollout_waves must rise and end at 100")
        if cfg.shadow_percent is not None and not 0 < cfg.shadow_percent <= 100:
            raise ValueError("learning config: shadow_percent must be in (0, 100]")
        return cfg


@dataclass
class LearningConfig:
    """``{"models": {"barn-ventilation": {"entrypoint": "pkg.mod:fn", "promotion":
    {"margin": 0.02, "approval": false}}}}``; models without an entry are not retrained."""

    models: dict[str, ModelLearning] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> LearningConfig:
        models = (doc or {}).get("models") or {}
        return cls({name: ModelLearning.from_mapping(m) for name, m in models.items()})


class LearningLoop:
    def __init__(
        self,
        registry: Any,
        examples: ExampleStore,
        config: LearningConfig,
        *,
        alerts: Any = None,
        on_promote: Callable[[str, int], None] | None = None,
        artifact_location: str | None = None,
        audit_engine: Any = None,
        rollouts: Callable[[], Any] | None = None,
        features: Callable[[], Any] | None = None,
    ) -> None:
        from control_plane.learning.rollouts import LearningRollouts

        # The control plane's Feast store (control_plane/feature_store.py), looked up when
        # needed: the features of entity-keyed models' examples come from its offline store.
        self.features = features or (lambda: None)
        self.audit_engine = audit_engine  # the audit log (control_plane.security.audit_log)
        self.registry = registry
        self.examples = examples
        self.config = config
        self.alerts = alerts
        self.on_promote = on_promote
        self.artifact_location = artifact_location
        # Staged rollouts of winners (control_plane/learning/rollouts.py); ``rollouts``
        # returns the RolloutService, looked up when needed (it is set up after us).
        self.staged = LearningRollouts(
            registry, examples, config, rollouts or (lambda: None), self._alert, on_promote
        )

    # The retraining hook protocol.
    def __call__(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        model = str(payload.get("model", ""))
        try:
            return self.run(
                model,
                since=payload.get("window_start"),
                until=payload.get("window_end"),
                decision_id=payload.get("id"),
            )
        except Exception as exc:  # a hook reports its failure on the decision, never raises
            log.exception("learning loop failed for %s", model)
            return {"kind": "training", "ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def _experiment_id(self) -> str:
        client = self.registry.client
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        return str(client.create_experiment(EXPERIMENT, artifact_location=self.artifact_location))

    def run(
        self,
        model: str,
        *,
        since: float | None,
        until: float | None,
        decision_id: Any = None,
    ) -> dict[str, Any]:
        cfg = self.config.models.get(model)
        if cfg is None:
            return {"kind": "training", "ok": False, "error": f"no learning config for {model!r}"}
        parent = self.registry.resolve(model)  # the champion: production
        meta = parent.meta
        task = meta.get("task", "classification")
        start = None if since is None else float(since) - cfg.lookback_s
        X, y_raw = self._examples(model, meta, start, until)
        if len(X) < cfg.min_rows:
            return {
                "kind": "training", "ok": False, "retry": True,  # the next period tries again
                "error": f"only {len(X)} labelled examples in the period (< {cfg.min_rows})",
            }  # fmt: skip
        y = _encode(y_raw, meta.get("labels"), task)
        rng = np.random.default_rng(int(decision_id or 0))
        order = rng.permutation(len(X))
        cut = int(len(X) * (1 - cfg.holdout_fraction))
        train, hold = order[:cut], order[cut:]
        window = [float(since or 0.0), float(until or 0.0)]
        run_id = self._train(
            model, cfg, parent.version, meta, X[train], y[train], window, decision_id
        )

        result: dict[str, Any] = {"kind": "training", "ok": True, "run_id": run_id}
        keep = ("task", "labels", "feature_names", "feature_schema", "serving", "runtime")
        cand_meta = {k: meta[k] for k in keep if meta.get(k) is not None}
        from control_plane.registry import RegistryError

        client = self.registry.client
        try:
            cand = self.registry.register_uri(model, f"runs:/{run_id}/model", meta=cand_meta)
        except RegistryError as exc:  # the gate refused the candidate: nothing to compare
            client.set_tag(run_id, "farmiq.promotion", "refused-at-registration")
            self._alert("candidate_refused", model, run_id, reason=str(exc))
            return {**result, "ok": False, "error": f"candidate refused: {exc}"}
        result["candidate_version"] = cand.version

        def holdout_score(version: int, runtime: str) -> float:
            data = self.registry.model_bytes(model, version)
            return score(predictions(data, runtime, X[hold], task), y[hold], task)

        self._calibrate(model, cand.version, cand.meta.get("runtime", "onnxruntime"),
                        X[hold], y[hold], task)  # fmt: skip
        champ = holdout_score(parent.version, meta.get("runtime", "onnxruntime"))
        chall = holdout_score(cand.version, cand.meta.get("runtime", "onnxruntime"))
        cmp = compare(champ, chall, len(hold), task, cfg.promotion)
        result["comparison"] = cmp.as_dict()
        client.log_metric(run_id, f"champion_holdout_{cmp.metric}", champ)
        client.log_metric(run_id, f"challenger_holdout_{cmp.metric}", chall)
        client.set_model_version_tag(model, str(cand.version), "farmiq.comparison", json.dumps(
            {**cmp.as_dict(), "champion_version": parent.version}
        ))  # fmt: skip
        staged = self.staged
        staged.registry.client.set_model_version_tag(
            model, str(cand.version), "farmiq.run_id", run_id
        )
        shadow = bool(cfg.auto_rollout and cfg.shadow_percent)
        if cmp.wins and not cfg.promotion.approval and not shadow:
            staged.mark(model, cand.version, "promoted")
            self.registry.promote(model, cand.version)
            if self.on_promote is not None:
                self.on_promote(model, cand.version)
            status = "promoted"
        elif cmp.wins and not cfg.promotion.approval:
            # production stays; the candidate is judged on a shadow wave of real gateways
            staged.mark(model, cand.version, "shadowing")
            self.registry.promote(model, cand.version, alias="challenger")
            status = "shadowing"
        elif cmp.wins:
            staged.mark(model, cand.version, "awaiting-approval")
            self.registry.promote(model, cand.version, alias="challenger")
            status = "awaiting-approval"
        else:
            staged.mark(model, cand.version, "rejected")
            status = "rejected"
        client.set_tag(run_id, "farmiq.promotion", status)
        result.update(status=status, promoted=status == "promoted", rollout=None)
        self._alert(
            f"candidate_{status.replace('-', '_')}", model, run_id,
            version=cand.version, champion_version=parent.version, reason=cmp.reason,
        )  # fmt: skip
        if cfg.auto_rollout and status in ("promoted", "shadowing"):
            result["rollout"] = staged.start(model, cand.version, run_id, shadow=shadow)
        return result

    def _examples(
        self, model: str, meta: Mapping[str, Any], since: float | None, until: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The period's labelled rows: feature vectors the gateways sent, and, for a model
        served by entity (``feature_schema``), the Feast offline store's point-in-time
        features of each labelled (entity, time)."""
        X, y, _ = self.examples.window(model, since, until)
        schema_ref = meta.get("feature_schema")
        ents, ey, ets = self.examples.entity_window(model, since, until)
        if not ents:
            return X, y
        store = self.features()
        if not schema_ref or store is None:
            log.warning("%s: %d entity examples, but no feature schema or Feast store to "
                        "read their features from: left out", model, len(ents))  # fmt: skip
            return X, y
        from control_plane.learning.feast_source import training_rows

        schema = store.schemas.get(schema_ref["name"])
        if schema is None or schema.version != schema_ref.get("version"):
            raise ValueError(
                f"{model}: feature schema {schema_ref} is not the Feast store's "
                f"({None if schema is None else schema.version})"
            )
        FX, kept = training_rows(store, schema, ents, ets)
        if len(kept) < len(ents):
            log.info("%s: %d of %d entity examples had features missing in Feast: left out",
                     model, len(ents) - len(kept), len(ents))  # fmt: skip
        if X.size and X.shape[1] != FX.shape[1]:
            log.warning("%s: vector examples of another width than the schema: left out", model)
            X, y = X[:0].reshape(0, FX.shape[1]), y[:0]
        if not X.size:
            return FX, ey[kept]
        return np.concatenate([X, FX]), np.concatenate([y, ey[kept]])

    def _calibrate(
        self, model: str, version: int, runtime: str, X: np.ndarray, y: np.ndarray, task: str
    ) -> None:
        """The candidate's calibration, fitted on the holdout when it is registered."""
        if task != "regression":
            calibrate_version(
                self.registry.client, model, version,
                self.registry.model_bytes(model, version), runtime, X, y,
            )  # fmt: skip

    def _train(
        self,
        model: str,
        cfg: ModelLearning,
        parent_version: int,
        meta: dict[str, Any],
        X: np.ndarray,
        y: np.ndarray,
        window: list[float],
        decision_id: Any,
    ) -> str:
        import mlflow
        import pandas as pd

        names = list(meta.get("feature_names") or [f"f{i}" for i in range(X.shape[1])])
        if len(names) != X.shape[1]:
            names = [f"f{i}" for i in range(X.shape[1])]
        data = TrainingData(
            model=model, X=X, y=y, feature_names=names, labels=meta.get("labels"),
            window=(window[0], window[1]), parent_version=parent_version, params=cfg.params,
        )  # fmt: skip
        # a callable is loaded before the run starts; an MLflow project runs inside it
        entry = None if is_project(cfg.entrypoint) else load_entrypoint(cfg.entrypoint)
        with mlflow.start_run(
            experiment_id=self._experiment_id(), run_name=f"train-{model}"
        ) as run:
            mlflow.set_tags({
                "farmiq.kind": "training", "farmiq.model": model,
                "farmiq.parent_version": str(parent_version),
                "farmiq.data_window": json.dumps(window),
                "farmiq.decision_id": str(decision_id), "farmiq.entrypoint": cfg.entrypoint,
            })  # fmt: skip
            mlflow.log_params({
                "entrypoint": cfg.entrypoint, "rows": len(X), "window_start": window[0],
                "window_end": window[1], "parent_version": parent_version,
                **{f"param.{k}": v for k, v in cfg.params.items()},
            })  # fmt: skip
            df = pd.DataFrame(X, columns=names).assign(label=y)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "train.csv"
                df.to_csv(path, index=False)
                mlflow.log_artifact(str(path), "data")
                self._log_training_data(df, model, names, X)
                if entry is None:  # an MLflow project: it logs the model itself
                    run_project(cfg.entrypoint, run.info.run_id, str(path), cfg.params)
                    return str(run.info.run_id)
            fitted = entry(data)
            if isinstance(fitted, bytes | bytearray):
                import onnx

                mlflow.onnx.log_model(
                    onnx.load_from_string(bytes(fitted)), name="model",
                    input_example=X[:5], pip_requirements=["onnxruntime"],
                )  # fmt: skip
            else:
                from mlflow.models import infer_signature

                pred = fitted.predict(X[:200])
                mlflow.sklearn.log_model(
                    fitted, name="model", input_example=X[:5],
                    signature=infer_signature(X[:200], pred), pip_requirements=["scikit-learn"],
                )  # fmt: skip
                train_score = score(np.asarray(fitted.predict(X)), y, meta.get("task", ""))
                mlflow.log_metric(
                    "train_mae" if meta.get("task") == "regression" else "train_accuracy",
                    train_score,
                )
            return str(run.info.run_id)

    @staticmethod
    def _log_training_data(df: Any, model: str, names: list[str], X: np.ndarray) -> None:
        """The training rows as the run's input dataset, and their drift reference."""
        import mlflow
        from mlflow.data.pandas_dataset import from_pandas

        from farmiq.drift_reference import build_reference

        dataset = from_pandas(
            df, source=mlflow.get_artifact_uri("data/train.csv"), targets="label",
            name=f"{model}-feedback",
        )  # fmt: skip
        mlflow.log_input(dataset, context="training")
        mlflow.log_dict(
            build_reference({n: X[:, i] for i, n in enumerate(names)}), "farmiq/reference.json"
        )

    def _alert(self, kind: str, model: str, run_id: str, **fields: Any) -> None:
        if self.audit_engine is not None:
            from control_plane.security.audit_log import audit

            target = f"{model}/v{fields['version']}" if "version" in fields else model
            try:
                audit(
                    self.audit_engine, "learning-loop", f"learning.{kind}", target,
                    detail={"mlflow_run_id": run_id, **fields},
                )  # fmt: skip
            except Exception:  # the audit table may be missing in a bare set-up
                log.exception("learning audit entry failed")
        if self.alerts is None:
            return
        from control_plane.alerts.model import Alert, Kind, Severity

        bad = kind in ("candidate_refused", "candidate_rejected")
        version = fields.get("version")
        what = f"{model} v{version}" if version is not None else model
        reason = fields.get("reason") or ""
        try:
            self.alerts.send(Alert(
                kind=Kind(kind), severity=Severity.WARNING if bad else Severity.INFO,
                model=model, version=version,
                message=f"learning loop: {what} {kind.removeprefix('candidate_')}"
                        f"{': ' + str(reason) if reason else ''}"[:2000],
                details={"mlflow_run_id": run_id, **fields},
                dedup_key=f"{kind}:{model}:{version}:{run_id}",
            ))  # fmt: skip
        except Exception:  # alerts are best effort
            log.exception("learning alert failed")


def _encode(y: np.ndarray, labels: list[str] | None, task: str) -> np.ndarray:
    """Feedback truths as the model's targets: a label's index among the model's labels
    (or the class number itself), values for regression."""
    if task == "regression":
        return y.astype(np.float64)
    index = {str(lab): i for i, lab in enumerate(labels or [])}
    out = np.empty(len(y), dtype=np.int64)
    for i, v in enumerate(y):
        s = str(v)
        if s in index:
            out[i] = index[s]
        elif s.lstrip("-").isdigit():
            out[i] = int(s)
        else:
            raise ValueError(f"feedback truth {s!r} is not one of the model's labels {labels}")
    return out
