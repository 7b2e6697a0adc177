"""Alerts from what gateways report on ``up/...`` (run on the MQTT ingest worker).

- ``up/status`` ``offline`` / ``online``: gateway offline, and back (``gateway_online``)
  after an offline. The first status heard from a gateway after a control-plane start
  only sets the baseline (retained statuses arrive for the whole fleet at connect).
- ``up/install`` with ``ok: false``: install rejected, with the gateway's ``code``.
- ``up/health``: ``breakers: {target: {"state": "open", ...}}`` (the router's breaker
  snapshot) raises ``breaker_open``; ``mcus: {mcu_id: {"fault": "..."}}`` raises
  ``mcu_fault``. Today's agent does not put either in its health report yet; the shapes
  are the ones its router and MCU service hold (edge_agent/router.py ``breakers``).
- ``up/drift`` ``concept_drift`` events with ``state: drift``: concept drift, at once
  (the retraining policy sees them again at its next decision).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from control_plane.alerts.bus import AlertBus
from control_plane.alerts.model import Alert, Kind, Severity
from control_plane.gateway_reports import HealthReport, InstallAck, json_object, parse
from farmiq import topics

log = logging.getLogger(__name__)

FarmOf = Callable[[str], str | None]


class GatewayAlerts:
    def __init__(self, bus: AlertBus, farm_of: FarmOf | None = None) -> None:
        self.bus = bus
        self.farm_of = farm_of or (lambda _d: None)
        self._status: dict[str, str] = {}
        self._open: dict[tuple[str, str], bool] = {}  # (device, breaker or mcu) -> raised
        self._lock = threading.Lock()

    def _farm(self, device_id: str) -> str | None:
        try:
            return self.farm_of(device_id)
        except Exception:
            log.debug("farm of %s unknown", device_id, exc_info=True)
            return None

    def on_status(self, device_id: str, payload: bytes) -> None:
        status = payload.decode(errors="replace")
        if status not in ("online", "offline") or not topics.is_device_id(device_id):
            return  # control_plane/deployments.py logs what is malformed
        with self._lock:
            before = self._status.get(device_id)
            self._status[device_id] = status
        if before is None or before == status:
            return
        link = {"device": f"/api/v1/devices/{device_id}"}
        farm = self._farm(device_id)
        if status == "offline":
            self.bus.forget(f"gateway_online:{device_id}")
            self.bus.send(
                Alert(
                    kind=Kind.GATEWAY_OFFLINE,
                    severity=Severity.WARNING,
                    device_id=device_id,
                    farm_id=farm,
                    message=f"gateway {device_id} went offline",
                    links=link,
                    dedup_key=f"gateway_offline:{device_id}",
                )
            )
        else:
            self.bus.forget(f"gateway_offline:{device_id}")
            self.bus.send(
                Alert(
                    kind=Kind.GATEWAY_ONLINE,
                    severity=Severity.INFO,
                    device_id=device_id,
                    farm_id=farm,
                    message=f"gateway {device_id} is back online",
                    links=link,
                    dedup_key=f"gateway_online:{device_id}",
                )
            )

    def on_install(self, device_id: str, payload: bytes) -> None:
        ack = parse(InstallAck, device_id, topics.INSTALL_ACK, payload)
        if ack is None or ack.ok:
            return
        extra: dict[str, Any] = ack.model_extra or {}
        model = extra.get("name") or extra.get("model")
        code = ack.code or "unknown"
        links = {"device": f"/api/v1/devices/{device_id}"}
        if ack.rollout:
            links["rollout"] = f"/api/v1/rollouts/{ack.rollout}"
        self.bus.send(
            Alert(
                kind=Kind.INSTALL_REJECTED,
                severity=Severity.WARNING,
                device_id=device_id,
                farm_id=self._farm(device_id),
                model=str(model) if model else None,
                version=ack.version,
                message=f"gateway {device_id} rejected a bundle ({code}): {ack.reason or ''}"[
                    :2000
                ],
                links=links,
                details={
                    "code": code,
                    "reason": ack.reason,
                    "bundle_id": ack.bundle_id,
                    "rollout": ack.rollout,
                },
                dedup_key=f"install_rejected:{device_id}:{ack.bundle_id or ''}:{code}",
            )
        )

    def on_health(self, device_id: str, payload: bytes) -> None:
        report = parse(HealthReport, device_id, topics.HEALTH, payload)
        if report is None:
            return
        extra = report.model_extra or {}
        breakers = extra.get("breakers")
        if isinstance(breakers, dict):
            for target, snap in breakers.items():
                state = snap.get("state") if isinstance(snap, dict) else snap
                if self._started(device_id, f"breaker:{target}", state == "open"):
                    self.bus.send(
                        Alert(
                            kind=Kind.BREAKER_OPEN,
                            severity=Severity.WARNING,
                            device_id=device_id,
                            farm_id=self._farm(device_id),
                            message=f"gateway {device_id}: circuit breaker to {target} is open",
                            details={"target": str(target), "breaker": snap},
                            dedup_key=f"breaker_open:{device_id}:{target}",
                        )
                    )
        mcus = extra.get("mcus")
        if isinstance(mcus, dict):
            for mcu_id, info in mcus.items():
                fault = info.get("fault") if isinstance(info, dict) else None
                if self._started(device_id, f"mcu:{mcu_id}", bool(fault)):
                    self.bus.send(
                        Alert(
                            kind=Kind.MCU_FAULT,
                            severity=Severity.CRITICAL,
                            device_id=device_id,
                            farm_id=self._farm(device_id),
                            message=f"gateway {device_id}: MCU {mcu_id} reports a fault: {fault}"[
                                :2000
                            ],
                            details={"mcu": str(mcu_id), "fault": str(fault)},
                            dedup_key=f"mcu_fault:{device_id}:{mcu_id}:{fault}",
                        )
                    )

    def _started(self, device_id: str, what: str, raised: bool) -> bool:
        """True when a condition starts: alert once, not on every report while it holds."""
        with self._lock:
            before = self._open.get((device_id, what), False)
            self._open[(device_id, what)] = raised
        return raised and not before

    def on_drift(self, device_id: str, payload: bytes) -> None:
        doc = json_object(device_id, topics.DRIFT, payload)
        if doc is None or doc.get("type") != "concept_drift" or doc.get("state") != "drift":
            return
        if doc.get("device_id") != device_id:  # the drift ingest rejects it too
            return
        model = str(doc.get("model", ""))[:256] or None
        detector = str(doc.get("detector", ""))[:32]
        self.bus.send(
            Alert(
                kind=Kind.CONCEPT_DRIFT,
                severity=Severity.WARNING,
                device_id=device_id,
                farm_id=self._farm(device_id),
                model=model,
                message=f"gateway {device_id}: concept drift on {model} ({detector}, "
                f"estimate {doc.get('estimate')})",
                links={"drift": "/api/v1/drift/models"},
                details={k: doc.get(k) for k in ("detector", "n_seen", "estimate", "previous")},
                dedup_key=f"concept_drift:{device_id}:{model}:{detector}",
            )
        )
