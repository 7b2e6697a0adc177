"""Alerts from rollout events: paused (a failed gate or an operator), failed, aborted,
succeeded. ``Scheduler.on_event`` calls :meth:`RolloutAlerts.on_event` in the session that
records the event, so the rollout row read here is the one just changed."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.alerts.bus import AlertBus
from control_plane.alerts.model import Alert, Kind, Severity
from control_plane.rollout.tables import Rollout, RolloutDevice

log = logging.getLogger(__name__)

MAX_DEVICE_REASONS = 20


def _device_reasons(s: Session, rid: str, wave: int | None) -> list[dict[str, Any]]:
    q = select(RolloutDevice).where(
        RolloutDevice.rollout_id == rid, RolloutDevice.code.is_not(None)
    )
    if wave is not None:
        q = q.where(RolloutDevice.wave == wave)
    return [
        {"device_id": d.device_id, "status": d.status, "code": d.code, "reason": d.reason}
        for d in s.scalars(q.limit(MAX_DEVICE_REASONS))
        if d.status in ("failed", "rolling_back", "rolled_back")
    ]


class RolloutAlerts:
    def __init__(self, bus: AlertBus) -> None:
        self.bus = bus

    def on_event(self, s: Session, rid: str, kind: str, detail: dict[str, Any]) -> None:
        try:
            alert = self._alert(s, rid, kind, detail)
        except Exception:  # an alert must never break the rollout's own transaction
            log.exception("could not build the alert for rollout %s event %s", rid, kind)
            return
        if alert is not None:
            self.bus.send(alert)

    def _alert(self, s: Session, rid: str, kind: str, detail: dict[str, Any]) -> Alert | None:
        r = s.get(Rollout, rid)
        if r is None:
            return None
        links = {"rollout": f"/api/v1/rollouts/{rid}", "dashboard": "/dashboard"}
        base: dict[str, Any] = {"model": r.model, "version": r.version, "links": links}
        what = f"rollout {rid} of {r.model} v{r.version}"
        if kind == "succeeded":
            return Alert(
                kind=Kind.ROLLOUT_SUCCEEDED,
                severity=Severity.INFO,
                message=f"{what} succeeded",
                dedup_key=f"rollout_succeeded:{rid}",
                **base,
            )
        if kind == "gate_failed":
            wave = detail.get("wave")
            checks = [c for c in (detail.get("result") or {}).get("checks", []) if not c["passed"]]
            devices = _device_reasons(s, rid, wave)
            pause = r.on_gate_failure == "pause"
            why = "; ".join(c.get("detail") or f"{c['name']} {c['value']}" for c in checks)
            return Alert(
                kind=Kind.ROLLOUT_PAUSED if pause else Kind.ROLLOUT_FAILED,
                severity=Severity.WARNING if pause else Severity.CRITICAL,
                message=f"{what}: wave {wave} failed its gate ({why}); "
                f"{'paused' if pause else 'failed'}"[:2000],
                details={"wave": wave, "failed_checks": checks, "devices": devices},
                dedup_key=f"rollout_gate_failed:{rid}:{wave}",
                **base,
            )
        if kind == "paused":
            return Alert(
                kind=Kind.ROLLOUT_PAUSED,
                severity=Severity.WARNING,
                message=f"{what} paused by an operator",
                dedup_key=f"rollout_paused:{rid}:{r.current_wave}",
                **base,
            )
        if kind == "aborted":
            return Alert(
                kind=Kind.ROLLOUT_ABORTED,
                severity=Severity.CRITICAL,
                message=f"{what} aborted: {r.reason or 'by an operator'}",
                details={"devices": _device_reasons(s, rid, None)},
                dedup_key=f"rollout_aborted:{rid}",
                **base,
            )
        return None
