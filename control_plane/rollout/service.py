"""Operator actions on rollouts: create, get, list, pause, resume, abort, rollback.

Every action that changes a rollout takes the same lock as the scheduler (waiting for it),
checks the transition against the state machine and records an event."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from control_plane.registry import ModelRegistry
from control_plane.rollout import desired
from control_plane.rollout import state_machine as sm
from control_plane.rollout.gates import GateThresholds
from control_plane.rollout.scheduler import Publish, Scheduler
from control_plane.rollout.tables import Rollout, RolloutDevice, RolloutEvent, RolloutWave
from control_plane.rollout.targeting import Targeting
from farmiq import tracing as farmiq_tracing


class WaveSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    percent: float = Field(gt=0, le=100, description="cumulative share of the targets")
    mode: Literal["install", "shadow"] = "install"


class RolloutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    version: int | None = Field(default=None, ge=1, description="default: the production alias")
    targeting: Targeting = Targeting()
    waves: list[WaveSpec] = Field(
        default_factory=lambda: [WaveSpec(percent=p) for p in (1, 10, 50, 100)], min_length=1
    )
    gates: GateThresholds = GateThresholds()
    rate_per_minute: int = Field(
        default=120, ge=1, description="devices given the new desired state per minute"
    )
    max_concurrent: int = Field(default=50, ge=1, description="devices installing at once")
    soak_s: float = Field(default=300.0, ge=0, description="minimum soak per wave before its gate")
    wave_timeout_s: float = Field(
        default=1800.0, gt=0, description="stop waiting for silent devices"
    )
    on_gate_failure: Literal["pause", "abort"] = "pause"
    start: bool = True


class RolloutError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


class RolloutService:
    def __init__(self, scheduler: Scheduler, registry: ModelRegistry) -> None:
        self.sch = scheduler
        self.db = scheduler.db
        self.registry = registry

    def create(self, spec: RolloutSpec) -> dict[str, Any]:
        pcts = [w.percent for w in spec.waves]
        if pcts != sorted(pcts) or pcts[-1] != 100:
            raise RolloutError(422, "wave percentages must be non-decreasing and end at 100")
        version = spec.version or self.registry.resolve(spec.model, None).version
        t = spec.targeting
        rec, _ = self.sch.bundles.build(
            spec.model, version, targeting={"hardware": t.hardware} if t.hardware else None
        )
        rid = f"r-{uuid.uuid4().hex[:10]}"
        with self.db.session() as s:
            s.add(
                Rollout(
                    id=rid,
                    model=spec.model,
                    version=version,
                    bundle_id=rec.bundle_id,
                    status=sm.PENDING if spec.start else sm.PAUSED,
                    targeting=t.model_dump(),
                    gates=spec.gates.model_dump(),
                    rate_per_minute=spec.rate_per_minute,
                    max_concurrent=spec.max_concurrent,
                    soak_s=spec.soak_s,
                    wave_timeout_s=spec.wave_timeout_s,
                    on_gate_failure=spec.on_gate_failure,
                    created=time.time(),
                    updated=time.time(),
                    rollback_bundles={},
                    traceparent=farmiq_tracing.current_traceparent(),
                )
            )
            for i, w in enumerate(spec.waves):
                s.add(RolloutWave(rollout_id=rid, index=i, percent=w.percent, mode=w.mode))
            self.sch.event(
                s, rid, "created", model=spec.model, version=version, bundle_id=rec.bundle_id
            )
        self.sch.wake()
        return self.get(rid)

    def get(self, rid: str) -> dict[str, Any]:
        with self.db.session() as s:
            r = s.get(Rollout, rid)
            if r is None:
                raise RolloutError(404, f"no rollout {rid!r}")
            waves = s.scalars(
                select(RolloutWave).where(RolloutWave.rollout_id == rid).order_by(RolloutWave.index)
            )
            counts: dict[int, dict[str, int]] = {}
            for wave, status, n in s.execute(
                select(RolloutDevice.wave, RolloutDevice.status, func.count())
                .where(RolloutDevice.rollout_id == rid)
                .group_by(RolloutDevice.wave, RolloutDevice.status)
            ):
                counts.setdefault(wave, {})[status] = n
            events = s.scalars(
                select(RolloutEvent)
                .where(RolloutEvent.rollout_id == rid, RolloutEvent.kind != "desired_sent")
                .order_by(RolloutEvent.id.desc())
                .limit(20)
            )
            total: dict[str, int] = {}
            for c in counts.values():
                for k, v in c.items():
                    total[k] = total.get(k, 0) + v
            return {
                "id": r.id,
                "model": r.model,
                "version": r.version,
                "bundle_id": r.bundle_id,
                "status": r.status,
                "reason": r.reason,
                "current_wave": r.current_wave,
                "targeting": r.targeting,
                "gates": r.gates,
                "rate_per_minute": r.rate_per_minute,
                "max_concurrent": r.max_concurrent,
                "soak_s": r.soak_s,
                "on_gate_failure": r.on_gate_failure,
                "created": r.created,
                "updated": r.updated,
                "devices": total,
                "waves": [
                    {
                        "index": w.index,
                        "percent": w.percent,
                        "mode": w.mode,
                        "status": w.status,
                        "started": w.started,
                        "soak_until": w.soak_until,
                        "finished": w.finished,
                        "devices": counts.get(w.index, {}),
                        "gate": w.gate_result,
                    }
                    for w in waves
                ],
                "events": [
                    {"ts": e.ts, "kind": e.kind, "replica": e.replica, "detail": e.detail}
                    for e in events
                ],
            }

    def list_rollouts(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(Rollout).order_by(Rollout.created.desc()).limit(limit)
            if status:
                q = q.where(Rollout.status == status)
            return [
                {
                    "id": r.id,
                    "model": r.model,
                    "version": r.version,
                    "status": r.status,
                    "current_wave": r.current_wave,
                    "created": r.created,
                    "reason": r.reason,
                }
                for r in s.scalars(q)
            ]

    def devices(self, rid: str) -> list[dict[str, Any]]:
        with self.db.session() as s:
            return [
                {
                    "device_id": d.device_id,
                    "wave": d.wave,
                    "status": d.status,
                    "from_version": d.from_version,
                    "code": d.code,
                    "reason": d.reason,
                    "sends": d.sends,
                    "updated": d.updated,
                }
                for d in s.scalars(
                    select(RolloutDevice)
                    .where(RolloutDevice.rollout_id == rid)
                    .order_by(RolloutDevice.wave, RolloutDevice.device_id)
                )
            ]

    # -- actions -------------------------------------------------------------------------
    def _act(self, rid: str, to: str, kind: str, *, scope: str | None = None) -> dict[str, Any]:
        pubs: list[Publish] = []
        with self.sch.lock.hold(rid, wait=True) as held:
            if held is None:
                raise RolloutError(
                    404 if not self._exists(rid) else 409, f"rollout {rid!r} is busy or missing"
                )
            s, r = held
            try:
                target = to
                if kind == "resumed":
                    self._resume(s, r, pubs)
                    target = sm.RUNNING
                sm.check_rollout(r.status, target)
            except sm.TransitionError as exc:
                raise RolloutError(409, str(exc)) from None
            if scope is not None:
                q = select(RolloutDevice).where(RolloutDevice.rollout_id == rid)
                if scope == "wave":
                    q = q.where(RolloutDevice.wave == r.current_wave)
                self.sch.rollback_devices(s, r, list(s.scalars(q)), pubs)
                for w in s.scalars(select(RolloutWave).where(RolloutWave.rollout_id == rid)):
                    if w.status in (sm.PENDING, sm.RUNNING, sm.SOAKING):
                        w.status = sm.check_wave(
                            w.status, sm.ABORTED if to == sm.ABORTED else sm.ROLLED_BACK
                        )
            r.status = target
            r.updated = time.time()
            if kind in ("aborted", "rolled_back") and not r.reason:
                r.reason = f"{kind.replace('_', ' ')} by an operator"
            self.sch.event(s, rid, kind)
        self.sch.publish(pubs)
        self.sch.wake()
        return self.get(rid)

    def _resume(self, s: Any, r: Rollout, pubs: list[Publish]) -> None:
        """Resuming after a failed gate runs that wave again (the operator's call)."""
        w = s.scalars(
            select(RolloutWave).where(
                RolloutWave.rollout_id == r.id, RolloutWave.index == r.current_wave
            )
        ).first()
        if w is not None and w.status == sm.FAILED and r.status == sm.PAUSED:
            w.status = sm.check_wave(w.status, sm.PENDING)
            w.gate_result = None
            for d in s.scalars(
                select(RolloutDevice).where(
                    RolloutDevice.rollout_id == r.id, RolloutDevice.wave == w.index
                )
            ):
                d.status, d.code, d.reason = "pending", None, None
                pub = desired.unblock(s, d.device_id, r.model, r.version, lock=self.sch.lock.pg)
                if pub:
                    pubs.append(pub)

    def _exists(self, rid: str) -> bool:
        with self.db.session() as s:
            return s.get(Rollout, rid) is not None

    def pause(self, rid: str) -> dict[str, Any]:
        return self._act(rid, sm.PAUSED, "paused")

    def resume(self, rid: str) -> dict[str, Any]:
        return self._act(rid, sm.RUNNING, "resumed")

    def abort(self, rid: str) -> dict[str, Any]:
        return self._act(rid, sm.ABORTED, "aborted", scope="wave")

    def rollback(self, rid: str) -> dict[str, Any]:
        return self._act(rid, sm.ROLLED_BACK, "rolled_back", scope="all")
