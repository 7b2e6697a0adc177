"""The control plane's MQTT connection: publish to gateways, ingest what they report.

paho's network thread only enqueues incoming messages; one worker thread runs the handlers
(database writes) in order, so a slow handler never stalls the network loop and a failing
one is logged, not fatal. Ingest uses a shared subscription so that several control-plane
replicas split the fleet's messages instead of each processing all of them.

MQTT 5 (farmiq/mqtt_client.py): with tracing on, what is published inside a span (an API
request, a rollout step) carries its W3C ``traceparent`` as a user property, and each
handler of a gateway's message runs in a ``mqtt.receive <leaf>`` span continuing the
gateway's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from control_plane.settings import CpMqtt
from farmiq import topics
from farmiq import tracing as farmiq_tracing
from farmiq.mqtt_client import connect_args, make_client, publish_properties, user_properties

if TYPE_CHECKING:
    from control_plane.director import Director

log = logging.getLogger(__name__)

UpHandler = Callable[[str, bytes], None]  # (device_id, payload)


class MqttBus:
    def __init__(self, settings: CpMqtt, *, shared_ingest: bool = True) -> None:
        self.settings = settings
        self._handlers: dict[str, list[UpHandler]] = {}
        self._queue: queue.Queue[tuple[str, bytes, dict[str, str]] | None]
        self._queue = queue.Queue(maxsize=100_000)
        self.connected = threading.Event()
        self._filter = (
            topics.shared(topics.FLEET_UP, settings.share_group)
            if shared_ingest and settings.shared_subscription
            else topics.FLEET_UP
        )
        # Clean session: see the class docstring on shared subscriptions.
        c = make_client(settings, settings.client_id, clean_session=True, max_inflight=200)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a, **k: self.connected.clear()
        c.on_message = self._on_message
        self.client = c
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        # Seals every signed down/ document (control_plane/director.py); set by build_context.
        self.director: Director | None = None
        # The control plane's tracer when OTEL_* turn tracing on (control_plane/tracing.py).
        self.tracer: Any = None

    def on(self, leaf: str, handler: UpHandler) -> None:
        """Call ``handler(device_id, payload)`` for messages on ``.../up/<leaf>``."""
        self._handlers.setdefault(leaf, []).append(handler)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("broker refused the control plane: %s", reason_code)
            return
        client.subscribe(self._filter, qos=1)
        self.connected.set()
        log.info("control plane connected to broker %s:%s", self.settings.host, self.settings.port)

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        try:
            carrier = user_properties(msg) if self.tracer is not None else {}
            self._queue.put_nowait((msg.topic, bytes(msg.payload), carrier))
        except queue.Full:
            log.error("ingest queue full; dropping message on %s", msg.topic)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, payload, carrier = item
            parsed = topics.parse_up(topic)
            if parsed is None:
                continue
            if self.tracer is None:
                self._handle(parsed[0], parsed[1], payload)
                continue
            with self.tracer.start_as_current_span(
                f"mqtt.receive {parsed[1]}",
                context=farmiq_tracing.extract(carrier) if carrier else None,
                kind=farmiq_tracing.consumer_kind(),
                attributes={"messaging.system": "mqtt", "messaging.destination.name": topic},
            ):
                self._handle(parsed[0], parsed[1], payload)

    def _handle(self, device_id: str, leaf: str, payload: bytes) -> None:
        for handler in self._handlers.get(leaf, []):
            try:
                handler(device_id, payload)
            except Exception:
                log.exception("handler for %s failed (device %s)", leaf, device_id)

    def start(self, wait: float = 5.0) -> bool:
        self._worker.start()
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=30,
            **connect_args(self.settings.protocol, clean_session=True),
        )
        self.client.loop_start()
        return self.connected.wait(wait)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        # Checked here, not left to the broker: it would drop the connection for a
        # malformed packet and paho would re-send the message after every reconnect.
        topics.check_topic(topic)
        if self.director is not None:
            payload = self.director.wrap(topic, payload)
        props = None
        if self.tracer is not None and self.settings.protocol == "5":
            props = publish_properties(farmiq_tracing.inject())
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self._queue.put(None)
