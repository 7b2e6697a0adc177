"""Direct deployment: push a signed bundle to named gateways and record what they answer.

This is the single-step push the staged rollouts (control_plane/rollout/) build on. It also
keeps the device table current from what gateways report (state, online/offline, install
acknowledgements).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from control_plane.bundles import BundleService
from control_plane.db import Database
from control_plane.gateway_reports import InstallAck, ReportedState, parse
from control_plane.mqtt_bus import MqttBus
from control_plane.tables import Deployment, Device
from farmiq import topics

log = logging.getLogger(__name__)


class DeploymentService:
    def __init__(self, db: Database, bundles: BundleService, bus: MqttBus | None) -> None:
        self.db = db
        self.bundles = bundles
        self.bus = bus
        # Set by control_plane.security.setup when enrollment is configured.
        self.is_revoked: Callable[[str], bool] = lambda _device_id: False
        if bus is not None:
            bus.on(topics.INSTALL_ACK, self.on_install_ack)
            bus.on(topics.STATE, self.on_state)
            bus.on(topics.STATUS, self.on_status)

    # -- outbound ------------------------------------------------------------------------
    def deploy(
        self, name: str, version: int, devices: list[str], *, rollback_of: int | None = None
    ) -> dict[str, Any]:
        """Push ``name`` v``version`` to ``devices``. ``rollback_of``: the version the
        devices run now, to sign a rollback order (a downgrade is refused without one)."""
        if not devices:
            raise ValueError("name at least one device")
        for d in devices:  # before anything is built, stored or published
            topics.check_device_id(d)
        revoked = [d for d in devices if self.is_revoked(d)]
        if revoked:
            raise ValueError(f"revoked devices get no bundles: {', '.join(revoked)}")
        if self.bus is None:
            raise RuntimeError("no broker connection: MQTT is disabled in the settings")
        rec, data = self.bundles.build(
            name, version, targeting={"devices": devices}, rollback_of=rollback_of
        )
        group = uuid.uuid4().hex[:12]
        with self.db.session() as s:
            for d in devices:
                s.add(
                    Deployment(group_id=group, bundle_id=rec.bundle_id, device_id=d, status="sent")
                )
        for d in devices:
            self.bus.publish(topics.down(d, topics.BUNDLE), data, qos=1)
        log.info(
            "deployed %s v%s to %d device(s)", name, version, len(devices), extra={"group": group}
        )
        return self.get(group)

    def get(self, group: str) -> dict[str, Any]:
        with self.db.session() as s:
            rows = s.scalars(select(Deployment).where(Deployment.group_id == group)).all()
        if not rows:
            raise KeyError(group)
        return {
            "id": group,
            "bundle_id": rows[0].bundle_id,
            "devices": {
                r.device_id: {
                    "status": r.status,
                    "code": r.code,
                    "reason": r.reason,
                    "updated": r.updated,
                }
                for r in rows
            },
        }

    # -- inbound (MQTT worker thread) ------------------------------------------------------
    def on_install_ack(self, device_id: str, payload: bytes) -> None:
        ack = parse(InstallAck, device_id, topics.INSTALL_ACK, payload)
        if ack is None:
            return
        bundle_id = ack.bundle_id
        status = "installed" if ack.ok else "rejected"
        with self.db.session() as s:
            # Rejected before the manifest could be trusted (no bundle id): newest pending one.
            which = Deployment.bundle_id == bundle_id if bundle_id else Deployment.status == "sent"
            q = select(Deployment).where(Deployment.device_id == device_id, which)
            row = s.scalars(q.order_by(Deployment.id.desc())).first()
            if row is not None:
                row.status, row.code, row.reason, row.updated = (
                    status,
                    ack.code,
                    ack.reason,
                    time.time(),
                )
        self._touch(device_id)

    def on_state(self, device_id: str, payload: bytes) -> None:
        parsed = parse(ReportedState, device_id, topics.STATE, payload)
        if parsed is None:
            return  # the last good state stays
        state = parsed.model_dump(exclude_unset=True)

        def apply(dev: Device) -> None:
            dev.reported = state
            dev.farm_id = parsed.farm_id or dev.farm_id or "default"
            dev.last_seen = time.time()
            dev.status = "online"

        self._upsert_device(device_id, apply)

    def on_status(self, device_id: str, payload: bytes) -> None:
        status = payload.decode(errors="replace")
        if not status:  # a retained status being cleared
            return
        if status not in ("online", "offline"):
            log.warning("status from %s is %r, not online/offline; dropped", device_id, status[:40])
            return
        try:
            topics.check_device_id(device_id)
        except ValueError as exc:
            log.warning("status from an unusable device id: %s; dropped", exc)
            return

        def apply(dev: Device) -> None:
            dev.status = status
            dev.last_seen = time.time()

        self._upsert_device(device_id, apply)

    def _upsert_device(self, device_id: str, apply: Callable[[Device], None]) -> None:
        """Create or update a device row. A gateway's status and state arrive together and
        may be handled at once (or by two replicas): when both create the row, the loser's
        insert fails on the key, and it applies its change to the row the other made."""
        for attempt in (1, 2):
            try:
                with self.db.session() as s:
                    dev = s.get(Device, device_id) or Device(device_id=device_id, reported={})
                    apply(dev)
                    s.add(dev)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def _touch(self, device_id: str) -> None:
        with self.db.session() as s:
            dev = s.get(Device, device_id)
            if dev is not None:
                dev.last_seen = time.time()
