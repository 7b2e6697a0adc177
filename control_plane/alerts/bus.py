"""One call to raise an alert: ``AlertBus.send(Alert(...))``.

Each alert goes to every configured sink: the MQTT topic ``farmiq/v1/cp/alert/<kind>``
(as before), the RabbitMQ exchange through the disk spool (durable, confirmed), every
signed webhook, and the recent-alerts list the dashboard shows. A repeat of the same
``dedup_key`` within ``dedup_s`` is dropped here, so a flapping condition (a gateway that
reconnects every minute, a drift check that runs every tick) raises one alert, not sixty.
Sending never raises: a failing sink is logged and the others still get the alert.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from control_plane.alerts.amqp_publisher import AmqpPublisher
from control_plane.alerts.model import Alert
from control_plane.alerts.recent import RecentAlerts
from control_plane.alerts.spool import AlertSpool
from control_plane.alerts.webhook_sender import WebhookSender
from farmiq import topics

log = logging.getLogger(__name__)

MqttPublish = Callable[[str, bytes], Any]


class AlertBus:
    def __init__(
        self,
        *,
        mqtt_publish: MqttPublish | None = None,
        spool: AlertSpool | None = None,
        amqp: AmqpPublisher | None = None,
        webhooks: list[WebhookSender] | None = None,
        recent: RecentAlerts | None = None,
        dedup_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mqtt_publish = mqtt_publish
        self.spool = spool
        self.amqp = amqp
        self.webhooks = list(webhooks or [])
        self.recent = recent
        self.dedup_s = dedup_s
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def _duplicate(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            while self._seen and next(iter(self._seen.values())) < now - self.dedup_s:
                self._seen.popitem(last=False)
            if key in self._seen:
                return True
            self._seen[key] = now
            return False

    def forget(self, key: str) -> None:
        """Let the next alert with ``key`` through (a condition that cleared)."""
        with self._lock:
            self._seen.pop(key, None)

    def send(self, alert: Alert) -> list[str]:
        """Where the alert went (empty when it was a duplicate)."""
        if self._duplicate(alert.dedup_key):
            log.debug("alert %s suppressed (repeat within %ss)", alert.dedup_key, self.dedup_s)
            return []
        body = alert.body()
        sent: list[str] = []
        log.log(
            logging.WARNING if alert.severity != "info" else logging.INFO,
            "alert %s: %s",
            alert.routing_key,
            alert.message,
            extra={
                "alert_kind": alert.kind.value,
                "alert_id": alert.id,
                "dedup_key": alert.dedup_key,
            },
        )
        if self.recent is not None:
            try:
                self.recent.add(alert.model_dump(mode="json"))
            except Exception:
                log.exception("could not keep alert %s for the dashboard", alert.id)
        if self.mqtt_publish is not None:
            try:
                self.mqtt_publish(topics.cp_alert(alert.kind.value), body)
                sent.append("mqtt")
            except Exception:
                log.exception("alert %s over MQTT failed", alert.id)
        if self.spool is not None:
            try:
                self.spool.put(alert.routing_key, body)
                sent.append("amqp")
                if self.amqp is not None:
                    self.amqp.wake()
            except Exception:
                log.exception("alert %s could not be kept for RabbitMQ", alert.id)
        for hook in self.webhooks:
            if hook.send(body):
                sent.append("webhook")
        return sent

    def close(self) -> None:
        if self.amqp is not None:
            self.amqp.stop()
        for hook in self.webhooks:
            hook.close()
        if self.spool is not None:
            self.spool.close()
        if self.recent is not None:
            self.recent.close()
