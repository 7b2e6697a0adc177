"""The rollout scheduler: advances every active rollout one step per tick.

Only one control-plane replica advances a given rollout at a time:

* PostgreSQL: the tick runs in a transaction that holds ``SELECT ... FOR UPDATE SKIP
  LOCKED`` on the rollout row; a second replica skips the row instead of waiting;
* SQLite (single host): a lease on the row (``lease_owner``, ``lease_until``) taken with
  one conditional UPDATE; a replica that dies mid-tick loses it when it expires.

All state is in the database (waves, per-device status, desired state), so a restart in
the middle of a wave continues from the rows: devices marked ``sent`` whose gateway never
answered get their (retained, idempotent) desired state published again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from control_plane.bundles import BundleService
from control_plane.db import Database
from control_plane.mqtt_bus import MqttBus
from control_plane.rollout import desired, gates
from control_plane.rollout import state_machine as sm
from control_plane.rollout.tables import (
    DeviceHealth,
    Rollout,
    RolloutDevice,
    RolloutEvent,
    RolloutWave,
)
from control_plane.rollout.targeting import Targeting, assign_waves, resolve
from control_plane.rollout.transfer import TransferServer
from control_plane.tables import Device
from farmiq.rollout_wire import DesiredModel

log = logging.getLogger(__name__)

Publish = tuple[str, bytes]
DONE = ("installed", "failed", "skipped")


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RolloutLock:
    def __init__(self, db: Database, owner: str, lease_s: float = 30.0) -> None:
        self.db = db
        self.owner = owner
        self.lease_s = lease_s
        self.pg = db.engine.dialect.name == "postgresql"

    def _take_lease(self, rid: str) -> bool:
        now = time.time()
        with self.db.session() as s:
            res = s.execute(
                update(Rollout)
                .where(Rollout.id == rid)
                .where(
                    or_(
                        Rollout.lease_owner.is_(None),
                        Rollout.lease_owner == self.owner,
                        Rollout.lease_until < now,
                    )
                )
                .values(lease_owner=self.owner, lease_until=now + self.lease_s)
            )
            return res.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def _exists(self, rid: str) -> bool:
        with self.db.session() as s:
            return s.get(Rollout, rid) is not None

    def _drop_lease(self, rid: str) -> None:
        with self.db.session() as s:
            s.execute(
                update(Rollout)
                .where(Rollout.id == rid, Rollout.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=0.0)
            )

    @contextmanager
    def hold(self, rid: str, *, wait: bool) -> Iterator[tuple[Session, Rollout] | None]:
        """Yield (session, locked row), or None when another replica holds it (wait=False)."""
        if self.pg:
            with self.db.session() as s:
                q = select(Rollout).where(Rollout.id == rid).with_for_update(skip_locked=not wait)
                row = s.scalars(q).first()
                yield (s, row) if row is not None else None
            return
        deadline = time.time() + (self.lease_s + 5 if wait else 0)
        while not self._take_lease(rid):
            if time.time() >= deadline or not self._exists(rid):
                # No such rollout: no lease will ever be taken; don't wait the lease out.
                yield None
                return
            time.sleep(0.05)
        try:
            with self.db.session() as s:
                row = s.get(Rollout, rid)
                yield (s, row) if row is not None else None
        finally:
            self._drop_lease(rid)


class Scheduler:
    def __init__(
        self,
        db: Database,
        bundles: BundleService,
        transfers: TransferServer,
        bus: MqttBus | None,
        *,
        replica: str | None = None,
        tick_s: float = 1.0,
        resend_s: float = 30.0,
        is_active: Callable[[str], bool] | None = None,
    ) -> None:
        self.db = db
        self.bundles = bundles
        self.transfers = transfers
        self.bus = bus
        self.replica = replica or replica_id()
        self.lock = RolloutLock(db, self.replica)
        self.tick_s = tick_s
        self.resend_s = resend_s
        self.is_active = is_active
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners = []
        # The control plane's tracer when OTEL_* turn tracing on (control_plane/tracing.py):
        # each step is a ``rollout.step`` span continuing the creating request's trace,
        # and the desired states it publishes carry it to the gateways.
        self.tracer: Any = None

    # -- loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rollout-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("rollout scheduler tick failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    def tick(self) -> None:
        with self.db.session() as s:
            ids = list(s.scalars(select(Rollout.id).where(Rollout.status.in_(sm.ACTIVE))))
        for rid in ids:
            self.advance(rid)

    # -- one rollout, one step -------------------------------------------------------------
    def advance(self, rid: str) -> None:
        pubs: list[Publish] = []
        with ExitStack() as span:  # the span (tracing on) covers the step and its publishes
            with self.lock.hold(rid, wait=False) as held:
                if held is None:
                    return
                s, r = held
                if r.status in sm.ACTIVE:
                    if self.tracer is not None:
                        span.enter_context(self._span(r))
                    before = {"status": r.status, "wave": r.current_wave}
                    self._step(s, r, pubs)
                    r.updated = time.time()
                    self._audit_step(s, r, before)
            self.publish(pubs)

    def _span(self, r: Rollout) -> Any:
        from farmiq import tracing as farmiq_tracing

        parent = farmiq_tracing.extract({"traceparent": r.traceparent}) if r.traceparent else None
        return self.tracer.start_as_current_span(
            "rollout.step",
            context=parent,
            attributes={
                "farmiq.rollout": r.id,
                "farmiq.model": r.model,
                "farmiq.wave": r.current_wave,
            },
        )

    def _audit_step(self, s: Session, r: Rollout, before: dict[str, Any]) -> None:
        """Record an automatic advance, pause or rollback in the audit log (same session)."""
        after = {"status": r.status, "wave": r.current_wave}
        if after == before:
            return
        from control_plane.security.audit_log import audit_in_session

        if r.status in (sm.PAUSED, sm.FAILED):
            action = "rollout.rollback" if r.reason else "rollout.pause"
        else:
            action = "rollout.advance"
        try:
            with s.begin_nested():
                audit_in_session(
                    s, f"system:{self.replica}", action, r.id, before=before, after=after,
                    detail={"model": r.model, "version": r.version, "reason": r.reason},
                )  # fmt: skip
        except Exception:  # no audit table (a bare test database): the step still counts
            log.warning("rollout %s: audit entry not written", r.id, exc_info=True)

    def publish(self, pubs: list[Publish]) -> None:
        if self.bus is None:
            return
        for topic, payload in pubs:
            self.bus.publish(topic, payload, qos=1, retain=True)

    # Called with every rollout event (control_plane/alerts/rollout_alerts.py raises alerts).
    on_event: Callable[[Session, str, str, dict[str, Any]], None] | None = None

    # Judges a shadow wave on labelled feedback (GateThresholds.min_feedback_gain): the
    # check, or None while too few labelled rows arrived (control_plane/learning sets it).
    feedback_gate: Callable[[Session, Rollout, RolloutWave, list[str]], gates.Check | None] | None
    feedback_gate = None
    # More event listeners beside on_event (the learning loop promotes on a passed shadow).
    listeners: list[Callable[[Session, str, str, dict[str, Any]], None]]

    def event(self, s: Session, rid: str, kind: str, **detail: Any) -> None:
        s.add(
            RolloutEvent(
                rollout_id=rid, replica=self.replica, kind=kind, detail=detail, ts=time.time()
            )
        )
        if self.on_event is not None:
            self.on_event(s, rid, kind, detail)
        for listener in self.listeners:
            try:
                listener(s, rid, kind, detail)
            except Exception:  # a listener never breaks the rollout's own transaction
                log.exception("rollout %s: event listener failed on %s", rid, kind)

    def _waves(self, s: Session, rid: str) -> list[RolloutWave]:
        return list(
            s.scalars(
                select(RolloutWave).where(RolloutWave.rollout_id == rid).order_by(RolloutWave.index)
            )
        )

    def _step(self, s: Session, r: Rollout, pubs: list[Publish]) -> None:
        now = time.time()
        if r.status == sm.PENDING:
            r.status = sm.check_rollout(r.status, sm.RUNNING)
            self.event(s, r.id, "started")
        waves = self._waves(s, r.id)
        if r.current_wave >= len(waves):
            r.status = sm.check_rollout(r.status, sm.SUCCEEDED)
            self.event(s, r.id, "succeeded")
            return
        w = waves[r.current_wave]
        thresholds = gates.GateThresholds.model_validate(r.gates or {})
        if w.status == sm.PENDING:
            self._start_wave(s, r, w, waves)
        rows = list(
            s.scalars(
                select(RolloutDevice).where(
                    RolloutDevice.rollout_id == r.id, RolloutDevice.wave == w.index
                )
            )
        )
        if w.status == sm.RUNNING:
            failed = sum(1 for d in rows if d.status == "failed")
            if gates.install_budget_exceeded(thresholds, len(rows), failed):
                res = gates.GateResult(
                    False,
                    [
                        gates.Check(
                            "install_success",
                            round(1 - failed / len(rows), 3),  # even if every other device succeeds
                            thresholds.min_install_success,
                            False,
                            f"{failed} of {len(rows)} devices failed to install",
                        )
                    ],
                )
                self._gate_failed(s, r, w, rows, res, pubs)
                return
            self._send(s, r, w, rows, now, pubs)
            pending = any(d.status == "pending" for d in rows)
            all_done = all(d.status in DONE for d in rows)
            if all_done or (not pending and now > (w.started or now) + r.wave_timeout_s):
                w.status = sm.check_wave(w.status, sm.SOAKING)
                w.soak_until = now + r.soak_s
                r.status = sm.check_rollout(r.status, sm.SOAKING)
                self.event(s, r.id, "wave_soaking", wave=w.index, soak_s=r.soak_s)
        if w.status == sm.SOAKING and now >= (w.soak_until or 0):
            ids = [d.device_id for d in rows]
            health = {
                h.device_id: h
                for h in s.scalars(select(DeviceHealth).where(DeviceHealth.device_id.in_(ids)))
            }
            if w.mode == "shadow" and thresholds.min_shadow_rows:
                # A shadow wave judges live traffic: until enough requests were compared,
                # keep soaking (up to the wave timeout) instead of judging on no evidence.
                seen, agree = gates.shadow_rows(
                    {k: v.shadow for k, v in health.items()}, r.model, r.version
                )
                if (
                    seen < thresholds.min_shadow_rows
                    and now < (w.started or now) + r.wave_timeout_s
                ):
                    w.gate_result = {
                        "passed": None,
                        "waiting": "shadow rows",
                        "rows": seen,
                        "agree": agree,
                        "needed": thresholds.min_shadow_rows,
                    }
                    return
            feedback: gates.Check | None = None
            if w.mode == "shadow" and thresholds.min_feedback_gain is not None:
                feedback = self._feedback_check(s, r, w, ids)
                if feedback is None:
                    if now < (w.started or now) + r.wave_timeout_s:
                        w.gate_result = {"passed": None, "waiting": "labelled feedback"}
                        return
                    feedback = gates.Check(
                        "feedback_accuracy", None, thresholds.min_feedback_gain, False,
                        "too little labelled feedback before the wave timeout",
                    )  # fmt: skip
            res = gates.evaluate(
                thresholds,
                model=r.model,
                version=r.version,
                mode=w.mode,
                statuses={d.device_id: d.status for d in rows},
                health={k: v.health for k, v in health.items()},
                shadow={k: v.shadow for k, v in health.items()},
            )
            if feedback is not None:
                res.checks.append(feedback)
                res.passed = res.passed and feedback.passed
            w.gate_result = res.as_dict()
            if not res.passed:
                self._gate_failed(s, r, w, rows, res, pubs)
                return
            w.status = sm.check_wave(w.status, sm.SUCCEEDED)
            w.finished = now
            self.event(s, r.id, "gate_passed", wave=w.index, result=res.as_dict())
            r.current_wave += 1
            if r.current_wave >= len(waves):
                r.status = sm.check_rollout(r.status, sm.SUCCEEDED)
                self.event(s, r.id, "succeeded")
            else:
                r.status = sm.check_rollout(r.status, sm.RUNNING)

    def _feedback_check(
        self, s: Session, r: Rollout, w: RolloutWave, ids: list[str]
    ) -> gates.Check | None:
        if self.feedback_gate is None:
            return gates.Check(
                "feedback_accuracy", None, None, False, "no labelled-feedback judge configured"
            )
        try:
            return self.feedback_gate(s, r, w, ids)
        except Exception as exc:  # a judge that cannot judge fails the gate, visibly
            log.exception("rollout %s: feedback gate failed", r.id)
            return gates.Check("feedback_accuracy", None, None, False, f"judge failed: {exc}")

    def _fleet(self, s: Session) -> list[tuple[str, dict[str, Any], str | None]]:
        return [(d.device_id, d.reported or {}, d.farm_id) for d in s.scalars(select(Device))]

    def _start_wave(self, s: Session, r: Rollout, w: RolloutWave, waves: list[RolloutWave]) -> None:
        targets = resolve(Targeting.model_validate(r.targeting or {}), r.model, self._fleet(s))
        where = assign_waves(r.id, targets, [x.percent for x in waves])
        existing = {
            d.device_id: d
            for d in s.scalars(select(RolloutDevice).where(RolloutDevice.rollout_id == r.id))
        }
        reported = {
            d.device_id: d.reported or {}
            for d in s.scalars(select(Device).where(Device.device_id.in_(targets)))
        }
        added = 0
        for dev in targets:
            if where[dev] > w.index:
                continue
            row = existing.get(dev)
            if row is None:
                cur = ((reported.get(dev) or {}).get("models") or {}).get(r.model) or {}
                row = RolloutDevice(
                    rollout_id=r.id,
                    device_id=dev,
                    wave=w.index,
                    status="pending",
                    from_version=cur.get("version"),
                    updated=time.time(),
                )
                if self.is_active is not None and not self.is_active(dev):
                    row.status, row.code, row.reason = "skipped", "revoked", "device is revoked"
                s.add(row)
                added += 1
            elif row.status == "installed" and waves[row.wave].mode != w.mode:
                row.wave, row.status, row.updated = (
                    w.index,
                    "pending",
                    time.time(),
                )  # shadow -> install
                added += 1
        w.status = sm.check_wave(w.status, sm.RUNNING)
        w.started = time.time()
        s.flush()
        self.event(
            s, r.id, "wave_started", wave=w.index, percent=w.percent, mode=w.mode, devices=added
        )

    def _entry(self, r: Rollout, mode: str) -> DesiredModel:
        return self.transfers.spec(r.bundle_id, mode=mode, rollout=r.id)

    def _send(
        self,
        s: Session,
        r: Rollout,
        w: RolloutWave,
        rows: list[RolloutDevice],
        now: float,
        pubs: list[Publish],
    ) -> None:
        for d in rows:  # a lost or never-published desired state: publish it again
            if d.status == "sent" and d.sent_at and now - max(d.sent_at, d.updated) > self.resend_s:
                again = desired.current(s, d.device_id)
                if again:
                    pubs.append(again)
                    d.updated, d.sends = now, d.sends + 1
        recent = (
            s.scalar(
                select(func.count())
                .select_from(RolloutDevice)
                .where(RolloutDevice.rollout_id == r.id, RolloutDevice.sent_at >= now - 60)
            )
            or 0
        )
        inflight = (
            s.scalar(
                select(func.count())
                .select_from(RolloutDevice)
                .where(RolloutDevice.rollout_id == r.id, RolloutDevice.status == "sent")
            )
            or 0
        )
        budget = min(r.rate_per_minute - recent, r.max_concurrent - inflight)
        if budget <= 0:
            return
        entry = self._entry(r, w.mode)
        for d in [d for d in rows if d.status == "pending"][:budget]:
            if self.is_active is not None and not self.is_active(d.device_id):
                # revoked after its wave started: it never gets this desired state
                d.status, d.code, d.reason = "skipped", "revoked", "device is revoked"
                d.updated = now
                self.event(s, r.id, "device_skipped", wave=w.index, device=d.device_id)
                continue
            pub = desired.set_model(s, d.device_id, r.model, entry, lock=self.lock.pg)
            self.transfers.allow(d.device_id, {"models": {r.model: entry.model_dump()}})
            pubs.append(pub)
            d.status, d.sent_at, d.updated, d.sends = "sent", now, now, d.sends + 1
            self.event(s, r.id, "desired_sent", wave=w.index, device=d.device_id, mode=w.mode)

    def _gate_failed(
        self,
        s: Session,
        r: Rollout,
        w: RolloutWave,
        rows: list[RolloutDevice],
        res: gates.GateResult,
        pubs: list[Publish],
    ) -> None:
        w.status = sm.check_wave(w.status, sm.FAILED)
        w.gate_result = res.as_dict()
        w.finished = time.time()
        r.reason = f"wave {w.index} failed its gate: {res.why()}"
        self.event(s, r.id, "gate_failed", wave=w.index, result=res.as_dict())
        self.rollback_devices(s, r, rows, pubs)
        to = sm.PAUSED if r.on_gate_failure == "pause" else sm.FAILED
        r.status = sm.check_rollout(r.status, to)
        log.warning("rollout %s: %s; %s", r.id, r.reason, to)

    # -- rollback (also used by the operator's abort/rollback) -----------------------------
    def rollback_devices(
        self, s: Session, r: Rollout, rows: list[RolloutDevice], pubs: list[Publish]
    ) -> int:
        n = 0
        for d in rows:
            if d.status not in ("sent", "installed", "failed"):
                if d.status == "pending":
                    d.status = "skipped"
                continue
            if d.from_version is not None and d.from_version != r.version:
                bid = self._rollback_bundle(s, r, d.from_version)
                entry = self.transfers.spec(bid, rollout=r.id, blocked=[r.version])
            else:
                entry = DesiredModel(version=None, rollout=r.id, blocked=[r.version])
            pubs.append(desired.set_model(s, d.device_id, r.model, entry, lock=self.lock.pg))
            self.transfers.allow(d.device_id, {"models": {r.model: entry.model_dump()}})
            d.status = "rolling_back" if d.from_version is not None else "rolled_back"
            d.updated = time.time()
            n += 1
        self.event(s, r.id, "rolled_back_devices", devices=n)
        return n

    def _rollback_bundle(self, s: Session, r: Rollout, from_version: int) -> str:
        """A signed rollback order: version ``from_version`` naming the version it replaces."""
        key = str(from_version)
        known = dict(r.rollback_bundles or {})
        if key not in known:
            t = Targeting.model_validate(r.targeting or {})
            rec, data = self.bundles.build(
                r.model,
                from_version,
                rollback_of=r.version,
                targeting={"hardware": t.hardware} if t.hardware else None,
                session=s,
            )
            self.transfers.add(rec.bundle_id, rec.version, data)
            known[key] = rec.bundle_id
            r.rollback_bundles = known
        return str(known[key])
