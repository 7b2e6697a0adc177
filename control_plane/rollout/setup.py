"""Start-up hook of the rollout area (called by control_plane.app for every process).

Environment knobs (settings.py belongs to the foundation): ``FARMIQ_ROLLOUT_TICK_S``
(scheduler period, default 1), ``FARMIQ_ROLLOUT_RESEND_S`` (publish desired state again to
silent devices, default 30), ``FARMIQ_ROLLOUT_REPLICA`` (replica name in events),
``FARMIQ_ROLLOUT_CHUNK_SIZE`` (bytes, default 256 KiB)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from farmiq import topics
from farmiq.rollout_wire import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from control_plane.context import ControlPlaneContext

log = logging.getLogger(__name__)
SERVICE = "rollouts"


def setup(ctx: ControlPlaneContext) -> None:
    from control_plane.rollout.ingest import RolloutIngest
    from control_plane.rollout.scheduler import Scheduler
    from control_plane.rollout.service import RolloutService
    from control_plane.rollout.transfer import TransferServer

    transfers = TransferServer(
        ctx.db,
        ctx.bundles,
        ctx.mqtt,
        chunk_size=int(os.environ.get("FARMIQ_ROLLOUT_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)),
        is_revoked=lambda device_id: ctx.deployments.is_revoked(device_id),
    )

    def is_active(device_id: str) -> bool:
        # Looked up per call: the security area's setup runs after this one and replaces
        # ``ctx.deployments.is_revoked`` when a fleet_dir is configured (otherwise it is
        # always False). Revoked, not "not enrolled": gateways provisioned outside
        # enrollment (or simulated) still get rollouts; only a revoked one never does.
        return not ctx.deployments.is_revoked(device_id)

    scheduler = Scheduler(
        ctx.db,
        ctx.bundles,
        transfers,
        ctx.mqtt,
        replica=os.environ.get("FARMIQ_ROLLOUT_REPLICA") or None,
        tick_s=float(os.environ.get("FARMIQ_ROLLOUT_TICK_S", "1.0")),
        resend_s=float(os.environ.get("FARMIQ_ROLLOUT_RESEND_S", "30")),
        is_active=is_active,
    )
    ingest = RolloutIngest(ctx.db, transfers)
    if ctx.mqtt is not None:
        ctx.mqtt.on(topics.INSTALL_ACK, ingest.on_install)
        ctx.mqtt.on(topics.HEALTH, ingest.on_health)
        ctx.mqtt.on(topics.SHADOW, ingest.on_shadow)
        ctx.mqtt.on(topics.TRANSFER, ingest.on_transfer)
        from control_plane.director import DesiredRefresher
        from farmiq.director.envelope import DEFAULT_TTL_S
        from farmiq.director.gate import REPORT_LEAF

        bus = ctx.mqtt
        refresher = DesiredRefresher(
            ctx.db,
            lambda t, b: bus.publish(t, b, qos=1, retain=True),
            DEFAULT_TTL_S[topics.DESIRED],
        )
        bus.on(topics.STATUS, refresher.on_status)
        bus.on(REPORT_LEAF, refresher.on_refusal)
    learning = ctx.services.get("learning")  # control_plane/learning/setup.py, if configured
    if learning is not None:
        scheduler.feedback_gate = learning.staged.judge
        scheduler.listeners.append(learning.staged.on_event)
    ctx.services[SERVICE] = RolloutService(scheduler, ctx.registry)
    ctx.services["rollout_transfers"] = transfers
    scheduler.start()
    log.info("rollout scheduler started as replica %s", scheduler.replica)
