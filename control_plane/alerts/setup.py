"""Wire alerts into a control-plane process (runs after the other areas' setup).

Builds the :class:`AlertBus` from ``settings.alerts`` (RabbitMQ when ``amqp_url`` is set,
a signed webhook when ``webhook_url`` is set, plus the drift config's ``alert_webhook``),
registers the gateway-report handlers on the MQTT bus, and connects the alert sources of
the other areas: the drift trigger's ``Alerts`` and the rollout scheduler's ``on_event``.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from control_plane.alerts.amqp_publisher import AmqpPublisher
from control_plane.alerts.bus import AlertBus
from control_plane.alerts.gateway_alerts import GatewayAlerts
from control_plane.alerts.recent import RecentAlerts
from control_plane.alerts.rollout_alerts import RolloutAlerts
from control_plane.alerts.spool import AlertSpool
from control_plane.alerts.webhook_sender import WebhookSender
from control_plane.drift.trigger import WebhookHook
from control_plane.tables import Device
from farmiq import topics

log = logging.getLogger(__name__)

SERVICE = "alerts"


def webhook_secret(settings: Any) -> str:
    """The configured secret, else one made once under data_dir/keys (mode 0600)."""
    configured = getattr(settings.alerts, "webhook_secret", None)
    if configured:
        return str(configured)
    path = Path(settings.data_dir) / "keys" / "webhook-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    log.info("made the webhook signing secret %s (give it to webhook receivers)", path)
    return value


def build_bus(ctx: Any, extra_webhooks: list[str] | None = None) -> AlertBus:
    settings = ctx.settings
    cfg = settings.alerts
    data = Path(settings.data_dir) / "alerts"
    mqtt = getattr(ctx, "mqtt", None)
    spool = amqp = None
    if cfg.amqp_url:
        spool = AlertSpool(data / "amqp-spool.db")
        amqp = AmqpPublisher(cfg.amqp_url, cfg.exchange, spool)
        amqp.start()
    # getattr: a merged settings model may hold only amqp_url and exchange.
    urls = [u for u in [getattr(cfg, "webhook_url", None), *(extra_webhooks or [])] if u]
    hooks = [WebhookSender(u, webhook_secret(settings)) for u in dict.fromkeys(urls)]
    return AlertBus(
        mqtt_publish=(lambda t, b: mqtt.publish(t, b, qos=1)) if mqtt is not None else None,
        spool=spool,
        amqp=amqp,
        webhooks=hooks,
        recent=RecentAlerts(data / "recent.db"),
    )


def setup(ctx: Any) -> None:
    drift = ctx.services.get("drift")
    bus = build_bus(ctx, [drift.trigger.alerts.webhook_url] if drift is not None else None)
    ctx.services[SERVICE] = bus

    def farm_of(device_id: str) -> str | None:
        with ctx.session() as s:
            dev = s.get(Device, device_id)
            return dev.farm_id if dev is not None else None

    gateways = GatewayAlerts(bus, farm_of)
    if ctx.mqtt is not None:
        ctx.mqtt.on(topics.STATUS, gateways.on_status)
        ctx.mqtt.on(topics.INSTALL_ACK, gateways.on_install)
        ctx.mqtt.on(topics.HEALTH, gateways.on_health)
        ctx.mqtt.on(topics.DRIFT, gateways.on_drift)
    if drift is not None:
        drift.trigger.alerts.bus = bus
        hook = drift.trigger.hook
        if isinstance(hook, WebhookHook) and not hook.secret:
            hook.secret = webhook_secret(ctx.settings)  # every outgoing webhook is signed
    rollouts = ctx.services.get("rollouts")
    if rollouts is not None:
        rollouts.sch.on_event = RolloutAlerts(bus).on_event


def get_bus(ctx: Any) -> AlertBus | None:
    return ctx.services.get(SERVICE)  # type: ignore[no-any-return]
