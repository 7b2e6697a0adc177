"""When to retrain: a policy over fleet drift, with cooldown and hysteresis, and a memory.

A decision looks at the fleet-level analysis of a period and at concept-drift reports:

- signal: share of drifted input features >= ``share_high``, or the most drifted feature
  is severe (PSI >= ``severe_psi``), or at least ``concept_devices`` gateways reported a
  DDM/ADWIN drift, or at least ``device_share`` of devices have a drifted feature;
- clear: share < ``share_low`` and none of the above (between the two: no change);
- retrain when the signal has held for ``min_consecutive`` distinct analysis periods,
  the fleet saw at least ``min_samples`` rows, the model is outside its ``cooldown_s``
  since the last trigger, and the policy is not latched. A trigger latches the policy
  until the condition clears, so one noisy period cannot trigger twice (hysteresis).

Every decision is stored with its reasons and numbers (RetrainingDecisionRecord).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from control_plane.drift.ingest import DriftService
from control_plane.drift.tables import RetrainingDecisionRecord, RetrainingPolicyState


@dataclass(frozen=True)
class RetrainingPolicy:
    share_high: float = 0.3
    share_low: float = 0.15
    severe_psi: float = 0.5
    device_share: float = 0.5
    concept_devices: int = 1
    min_samples: int = 1000
    min_consecutive: int = 2
    cooldown_s: float = 24 * 3600.0

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> RetrainingPolicy:
        doc = dict(doc or {})
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"retraining policy: unknown keys {sorted(unknown)}")
        p = cls(**doc)
        if not 0 <= p.share_low <= p.share_high <= 1:
            raise ValueError("retraining policy: need 0 <= share_low <= share_high <= 1")
        if p.min_consecutive < 1 or p.min_samples < 0 or p.cooldown_s < 0:
            raise ValueError(
                "retraining policy: min_consecutive >= 1, min_samples and cooldown_s >= 0"
            )
        return p


@dataclass
class Decision:
    model: str
    retrain: bool
    reasons: list[str]
    metrics: dict[str, Any]
    at: float
    window_start: float | None = None
    window_end: float | None = None
    id: int | None = None
    triggered: bool = False
    mlflow_run_id: str | None = None
    hook_result: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RetrainingDecider:
    def __init__(
        self,
        drift: DriftService,
        policy: RetrainingPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.drift = drift
        self.policy = policy or RetrainingPolicy()
        self.clock = clock

    def decide(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        version: str | None = None,
    ) -> Decision:
        """Evaluate the policy for the period and store the decision with its reasons."""
        p = self.policy
        now = self.clock()
        fleet, meta = self.drift.analyze(
            model, level="fleet", version=version, since=since, until=until
        )
        devices, _ = self.drift.analyze(
            model, level="device", version=version, since=since, until=until
        )
        reasons: list[str] = []
        metrics: dict[str, Any] = {
            "windows": meta["windows"],
            "since": meta["since"],
            "until": meta["until"],
        }
        if fleet.labels:
            g = fleet.group(0, methods=("psi",))
            share, rows = g["drift_share"], g["rows"]
            max_psi = g["max_psi"] or 0.0
            drifted = g["drifted_features"]
        else:
            share, rows, max_psi, drifted = 0.0, 0, 0.0, []
        dev_flags = [bool(x > 0) for x in devices.drifted_share()] if devices.labels else []
        dev_share = sum(dev_flags) / len(dev_flags) if dev_flags else 0.0
        concept = self.drift.concept_events(model, since=meta["since"], until=meta["until"])
        concept_devs = sorted({e.device_id for e in concept if e.state == "drift"})
        metrics.update(
            rows=rows,
            drift_share=share,
            drifted_features=drifted,
            max_psi=max_psi,
            devices=len(dev_flags),
            drifted_device_share=dev_share,
            concept_drift_devices=concept_devs,
        )

        severe = max_psi >= p.severe_psi
        signals = []
        if share >= p.share_high:
            signals.append(
                f"{share:.0%} of features drifted (>= {p.share_high:.0%}): {', '.join(drifted)}"
            )
        if severe:
            signals.append(f"max PSI {max_psi:.3f} >= severe {p.severe_psi}")
        if len(concept_devs) >= p.concept_devices and concept_devs:
            signals.append(
                f"concept drift reported by {len(concept_devs)} device(s): "
                f"{', '.join(concept_devs[:10])}"
            )
        if dev_flags and dev_share >= p.device_share:
            signals.append(
                f"{dev_share:.0%} of devices have drifted features (>= {p.device_share:.0%})"
            )
        clear = not signals and share < p.share_low

        with self.drift.session() as s, s.begin():
            st = s.get(RetrainingPolicyState, model)
            if st is None:
                st = RetrainingPolicyState(model=model, consecutive=0, latched=False)
                s.add(st)
            # A period is new only when it holds windows that end later than any the policy
            # has counted: deciding again on the same data (or an older period) is not a
            # new period, whatever since/until the caller passed.
            data_end = meta["end"]
            new_period = data_end is not None and (
                st.last_window_end is None or data_end > st.last_window_end
            )
            if signals and new_period:
                st.consecutive += 1
            elif clear and new_period:
                st.consecutive = 0
                st.latched = False
            if new_period:
                st.last_window_end = data_end
            reasons += signals
            retrain = bool(signals)
            if not signals:
                reasons.append(
                    f"no drift signal (share {share:.0%} < {p.share_high:.0%}, "
                    f"max PSI {max_psi:.3f} < {p.severe_psi})"
                )
            if rows < p.min_samples:
                retrain = False
                reasons.append(f"only {rows} rows in the period (< {p.min_samples})")
            if signals and st.consecutive < p.min_consecutive:
                retrain = False
                reasons.append(
                    f"signal held for {st.consecutive} period(s) "
                    f"(< {p.min_consecutive}: hysteresis)"
                )
            if signals and st.latched:
                retrain = False
                reasons.append(
                    "already triggered for this drift episode; waiting for it to "
                    f"clear (share < {p.share_low:.0%})"
                )
            if st.last_trigger_at is not None and now - st.last_trigger_at < p.cooldown_s:
                if retrain:
                    reasons.append(
                        f"cooldown: last trigger {now - st.last_trigger_at:.0f}s ago "
                        f"(< {p.cooldown_s:.0f}s)"
                    )
                retrain = False
            metrics.update(
                consecutive=st.consecutive,
                latched=st.latched,
                last_trigger_at=st.last_trigger_at,
                new_period=new_period,
            )
            rec = RetrainingDecisionRecord(
                model=model,
                at=now,
                retrain=retrain,
                triggered=False,
                reasons=reasons,
                metrics=metrics,
                window_start=meta["start"],
                window_end=meta["end"],
            )
            s.add(rec)
            s.flush()
            rid = rec.id
        return Decision(model, retrain, reasons, metrics, now, meta["start"], meta["end"], rid)

    def mark_triggered(
        self,
        decision: Decision,
        run_id: str | None,
        hook_result: dict[str, Any] | None,
        *,
        forced: bool = False,
    ) -> None:
        """Start the cooldown and latch the policy; record the run on the decision. A
        forced trigger is a decision to retrain: it is stored (and answered) as one. A
        hook that says ``retry`` (too few labelled examples yet) neither latches nor
        starts the cooldown: the next period with new data tries again."""
        retry = bool((hook_result or {}).get("retry"))
        with self.drift.session() as s, s.begin():
            st = s.get(RetrainingPolicyState, decision.model)
            if st is None:
                st = RetrainingPolicyState(model=decision.model, consecutive=0)
                s.add(st)
            if not retry:
                st.latched = True
                st.last_trigger_at = decision.at
            if decision.id is not None:
                rec = s.get(RetrainingDecisionRecord, decision.id)
                if rec is not None:
                    rec.triggered = True
                    rec.retrain = rec.retrain or forced
                    if forced:
                        rec.reasons = list(decision.reasons)
                    rec.mlflow_run_id = run_id
                    rec.hook_result = hook_result
        decision.triggered = True
        decision.retrain = decision.retrain or forced
        decision.mlflow_run_id = run_id
        decision.hook_result = hook_result

    def history(self, model: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.drift.session() as s:
            recs = s.scalars(
                select(RetrainingDecisionRecord)
                .where(RetrainingDecisionRecord.model == model)
                .order_by(RetrainingDecisionRecord.id.desc())
                .limit(limit)
            )
            return [
                {
                    "id": r.id,
                    "at": r.at,
                    "retrain": r.retrain,
                    "triggered": r.triggered,
                    "reasons": r.reasons,
                    "metrics": r.metrics,
                    "mlflow_run_id": r.mlflow_run_id,
                }
                for r in recs
            ]
