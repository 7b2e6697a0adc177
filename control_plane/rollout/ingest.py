"""What gateways report, applied to rollout state (runs on the MQTT ingest worker).

With a shared subscription each message reaches one replica, so every handler is a small
idempotent database update keyed by device (and rollout)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select

from control_plane.db import Database
from control_plane.gateway_reports import HealthReport, InstallAck, ShadowReport, parse
from control_plane.rollout.tables import DeviceHealth, RolloutDevice
from control_plane.rollout.transfer import TransferServer
from farmiq import topics

log = logging.getLogger(__name__)


class RolloutIngest:
    def __init__(self, db: Database, transfers: TransferServer) -> None:
        self.db = db
        self.transfers = transfers

    def _health_row(self, s: Any, device_id: str) -> DeviceHealth:
        row = s.get(DeviceHealth, device_id)
        if row is None:
            row = DeviceHealth(device_id=device_id, health={}, shadow={}, transfer={})
            s.add(row)
        return row  # type: ignore[no-any-return]

    def on_install(self, device_id: str, payload: bytes) -> None:
        ack = parse(InstallAck, device_id, topics.INSTALL_ACK, payload)
        if ack is None or not ack.rollout:
            return  # a direct deployment's ack: control_plane/deployments.py handles it
        with self.db.session() as s:
            row = s.scalars(
                select(RolloutDevice).where(
                    RolloutDevice.rollout_id == ack.rollout,
                    RolloutDevice.device_id == device_id,
                )
            ).first()
            if row is None:
                return
            ok = ack.ok
            if row.status == "rolling_back":
                if ok and ack.version == row.from_version:
                    row.status = "rolled_back"
                    row.updated = time.time()
                    return  # keep the code and reason of the failure that caused it
            elif row.status in ("sent", "pending", "failed", "installed"):
                row.status = "installed" if ok else "failed"
            row.code, row.reason = ack.code, ack.reason
            row.updated = time.time()

    def on_health(self, device_id: str, payload: bytes) -> None:
        report = parse(HealthReport, device_id, topics.HEALTH, payload)
        if report is None:
            return  # the gates keep judging the last good report
        with self.db.session() as s:
            row = self._health_row(s, device_id)
            row.health, row.updated = report.model_dump(exclude_unset=True), time.time()

    def on_shadow(self, device_id: str, payload: bytes) -> None:
        report = parse(ShadowReport, device_id, topics.SHADOW, payload)
        if report is None:
            return
        with self.db.session() as s:
            row = self._health_row(s, device_id)
            row.shadow = {**(row.shadow or {}), report.model: report.model_dump(exclude_unset=True)}
            row.updated = time.time()

    def on_transfer(self, device_id: str, payload: bytes) -> None:
        progress = self.transfers.on_request(device_id, payload)
        if progress is None:
            return
        with self.db.session() as s:
            row = self._health_row(s, device_id)
            row.transfer = {
                k: progress.get(k)
                for k in ("bundle_id", "state", "received", "total", "resumes_at")
            }
            row.updated = time.time()
