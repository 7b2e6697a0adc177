"""From a winning candidate to the fleet: the learning loop's staged rollouts.

* ``start`` creates a rollout through the rollout service (waves, health gates) for a
  promoted candidate, or, with ``shadow_percent``, a rollout whose first wave runs the
  candidate as a shadow on that share of the gateways while production stays where it is;
* ``judge`` is the scheduler's ``feedback_gate``: a learning candidate's shadow wave is
  judged on the labelled feedback that the wave's gateways sent during the shadow period,
  champion (production) and challenger each run in the gateway runtime on their
  registered bytes, and passes only when the challenger wins by the model's margin
  (agreement with a drifted champion is the wrong test for a model retrained on the drift);
* ``on_event`` (a scheduler listener) promotes the candidate when its shadow wave passed,
  after the rollout's transaction committed, so the install waves that follow roll out
  the new production; a failed shadow wave leaves production alone and rejects it;
* ``on_promoted`` (a promotion hook) starts the rollout when an operator approves a
  candidate that waited for approval.

Each step is audited (actor ``learning-loop``) and alerted through the loop's ``notify``.
Which candidate a rollout belongs to is kept on the model version's tags
(``farmiq.learning``: status, ``farmiq.learning_rollout``: rollout id), so a control plane
that restarts mid-shadow still promotes or rejects it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from control_plane.learning.champion import PromotionPolicy, compare, predictions, score
from control_plane.learning.examples import ExampleStore

if TYPE_CHECKING:
    from control_plane.learning.loop import LearningConfig

log = logging.getLogger(__name__)

STATUS_TAG = "farmiq.learning"
ROLLOUT_TAG = "farmiq.learning_rollout"
SHADOWING = "shadowing"
AWAITING = "awaiting-approval"

Notify = Callable[..., None]  # notify(kind, model, run_id, **fields): audit + alert


def serving(db: Any, model: str) -> list[str]:
    """The gateways whose last report says they serve ``model``: a retrained candidate
    goes to the champion's fleet, not to every gateway the control plane knows."""
    from sqlalchemy import select

    from control_plane.tables import Device

    with db.session() as s:
        rows = s.execute(select(Device.device_id, Device.reported)).all()
    return sorted(d for d, rep in rows if model in ((rep or {}).get("models") or {}))


class LearningRollouts:
    def __init__(
        self,
        registry: Any,
        examples: ExampleStore,
        config: LearningConfig,
        rollouts: Callable[[], Any],
        notify: Notify,
        on_promote: Callable[[str, int], None] | None = None,
    ) -> None:
        self.registry = registry
        self.examples = examples
        self.config = config
        self.rollouts = rollouts  # -> the RolloutService (looked up late: set up after us)
        self.notify = notify
        self.on_promote = on_promote
        self._bytes: dict[tuple[str, int], bytes] = {}

    # -- tags ------------------------------------------------------------------------------
    def _tags(self, model: str, version: int) -> dict[str, str]:
        mv = self.registry.client.get_model_version(model, str(version))
        return dict(mv.tags or {})

    def _tag(self, model: str, version: int, key: str, value: str) -> None:
        self.registry.client.set_model_version_tag(model, str(version), key, value)

    def mark(self, model: str, version: int, status: str) -> None:
        self._tag(model, version, STATUS_TAG, status)

    # -- start -----------------------------------------------------------------------------
    def start(self, model: str, version: int, run_id: str, *, shadow: bool) -> str | None:
        """Create the rollout; its id, or None when no rollout service is running."""
        from control_plane.rollout.gates import GateThresholds
        from control_plane.rollout.service import RolloutSpec, WaveSpec
        from control_plane.rollout.targeting import Targeting

        cfg = self.config.models[model]
        service = self.rollouts()
        if service is None:
            log.warning("learning loop: no rollout service; %s v%d not rolled out", model, version)
            return None
        waves = [WaveSpec(percent=p) for p in cfg.rollout_waves]
        gates = GateThresholds()
        if shadow and cfg.shadow_percent:
            waves.insert(0, WaveSpec(percent=cfg.shadow_percent, mode="shadow"))
            gates = GateThresholds(
                min_shadow_agreement=None,
                min_feedback_gain=cfg.promotion.margin,
                min_feedback_rows=cfg.shadow_min_feedback,
            )
        fleet = serving(service.sch.db, model)
        if not fleet:
            log.warning("learning loop: no gateway serves %s; v%d not rolled out", model, version)
            return None
        spec = RolloutSpec(
            model=model, version=version, waves=waves, gates=gates,
            soak_s=cfg.rollout_soak_s, wave_timeout_s=cfg.rollout_wave_timeout_s,
            targeting=Targeting(devices=fleet),
        )  # fmt: skip
        rollout = service.create(spec)
        rid = str(rollout["id"])
        if shadow and cfg.shadow_percent:  # fetched now, not inside the scheduler's tick
            for v in {version, self.registry.resolve(model).version}:
                self._model_bytes(model, v)
        self._tag(model, version, ROLLOUT_TAG, rid)
        self.notify(
            "learning_rollout_started", model, run_id, version=version, rollout=rid,
            shadow=bool(shadow and cfg.shadow_percent), waves=[w.model_dump() for w in waves],
        )  # fmt: skip
        return rid

    # -- the shadow wave's gate --------------------------------------------------------------
    def _model_bytes(self, model: str, version: int) -> bytes:
        key = (model, version)
        if key not in self._bytes:
            self._bytes[key] = self.registry.model_bytes(model, version)
        return self._bytes[key]

    def judge(self, s: Any, r: Any, w: Any, devices: list[str]) -> Any:
        from control_plane.learning.loop import _encode
        from control_plane.rollout.gates import Check, GateThresholds

        t = GateThresholds.model_validate(r.gates or {})
        X, y_raw, _ = self.examples.window(r.model, since=w.started, until=None, devices=devices)
        if len(X) < max(1, t.min_feedback_rows):
            return None  # keep soaking: too little labelled feedback yet
        champion = self.registry.resolve(r.model)
        meta = champion.meta
        task = meta.get("task", "classification")
        y = _encode(y_raw, meta.get("labels"), task)
        runtime = meta.get("runtime", "onnxruntime")

        def acc(version: int) -> float:
            pred = predictions(self._model_bytes(r.model, version), runtime, X, task)
            return score(pred, y, task)

        champ = acc(champion.version) if champion.version != r.version else None
        chall = acc(r.version)
        policy = PromotionPolicy(
            margin=float(t.min_feedback_gain or 0.0), min_holdout=max(1, t.min_feedback_rows)
        )
        cmp = compare(champ, chall, len(X), task, policy)
        value = chall if cmp.metric == "accuracy" else -chall
        return Check(
            "feedback_accuracy" if cmp.metric == "accuracy" else "feedback_mae",
            round(float(value), 4),
            None if champ is None else round(float(champ), 4),
            cmp.wins,
            f"{cmp.reason} on {len(X)} labelled rows from {len(set(devices))} shadow gateways "
            f"(champion v{champion.version})",
        )

    # -- after the shadow wave's gate ----------------------------------------------------------
    def on_event(self, s: Any, rid: str, kind: str, detail: dict[str, Any]) -> None:
        if kind not in ("gate_passed", "gate_failed"):
            return
        from sqlalchemy import event, select

        from control_plane.rollout.tables import Rollout, RolloutWave

        # No autoflush: flushing the rollout's pending writes here would take SQLite's
        # write lock before the scheduler builds rollback bundles on another connection.
        with s.no_autoflush:
            r = s.get(Rollout, rid)
            if r is None or r.model not in self.config.models:
                return
            wave = s.scalars(
                select(RolloutWave).where(
                    RolloutWave.rollout_id == rid, RolloutWave.index == detail.get("wave")
                )
            ).first()
        if wave is None or wave.mode != "shadow":
            return
        model, version, passed = r.model, r.version, kind == "gate_passed"
        result = detail.get("result") or {}

        def verdict() -> None:
            try:
                self._shadow_done(model, version, rid, passed, result)
            except Exception:
                log.exception("learning loop: shadow outcome of %s v%d failed", model, version)

        def after_commit(_session: Any) -> None:
            # Its own thread: promotion hooks write to the control plane's database and
            # MLflow, which must not wait on (or inside) the scheduler's transaction.
            threading.Thread(target=verdict, name="learning-shadow-verdict", daemon=True).start()

        event.listen(s, "after_commit", after_commit, once=True)

    def _shadow_done(
        self, model: str, version: int, rid: str, passed: bool, result: dict[str, Any]
    ) -> None:
        tags = self._tags(model, version)
        if tags.get(STATUS_TAG) != SHADOWING or tags.get(ROLLOUT_TAG) != rid:
            return  # not a learning candidate in its shadow wave (or already decided)
        run_id = tags.get("farmiq.run_id", "")
        checks = [c for c in result.get("checks", []) if c.get("name", "").startswith("feedback")]
        reason = "; ".join(str(c.get("detail")) for c in checks) or "shadow gate"
        if not passed:
            self.mark(model, version, "rejected")
            self.notify("candidate_rejected", model, run_id, version=version, rollout=rid,
                        reason=f"shadow wave: {reason}", stage="shadow")  # fmt: skip
            return
        self.registry.promote(model, version)
        self.mark(model, version, "promoted")
        if self.on_promote is not None:
            self.on_promote(model, version)
        self.notify("candidate_promoted", model, run_id, version=version, rollout=rid,
                    reason=f"shadow wave: {reason}", stage="shadow")  # fmt: skip

    # -- an operator approved a candidate ---------------------------------------------------
    def on_promoted(self, model: str, version: int) -> None:
        cfg = self.config.models.get(model)
        if cfg is None or not cfg.auto_rollout:
            return
        tags = self._tags(model, version)
        if tags.get(STATUS_TAG) != AWAITING:
            return
        self.mark(model, version, "approved")
        run_id = tags.get("farmiq.run_id", "")
        self.notify("candidate_promoted", model, run_id, version=version,
                    reason="approved by an operator", stage="approval")  # fmt: skip
        self.start(model, version, run_id, shadow=False)
