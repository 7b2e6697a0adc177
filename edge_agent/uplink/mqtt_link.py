"""A thin asyncio wrapper over paho-mqtt 2.x for the agent.

paho runs its network loop in its own thread; every callback is handed to the asyncio loop
with ``call_soon_threadsafe``, so handlers run on the loop and never block the network
thread. The session is persistent (MQTT 5 clean_start=False with a session that never
expires, or 3.1.1 clean_session=False; fixed client id): QoS 1 messages sent while the
gateway was away are delivered when it reconnects. paho reconnects by itself with backoff;
we only track the state and resubscribe.

With a tracer (OTEL_* on, farmiq/tracing.py) and MQTT 5, a message's ``traceparent`` user
property is the parent of the span its handler runs in (``mqtt.receive <leaf>``), and
whatever the gateway publishes inside a span carries that span's ``traceparent``: the
control plane's request, the gateway's handling and its MCU command are one trace.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.config import MqttSettings
from farmiq import topics
from farmiq import tracing as farmiq_tracing
from farmiq.mqtt_client import connect_args, make_client, publish_properties, user_properties

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]


class MqttLink:
    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        subscriptions: list[tuple[str, int]],
        on_message: Handler,
        will: tuple[str, bytes] | None = None,
        on_connect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        self._ever_connected = False
        # Why the broker is not connected, in words (None while connected or not yet tried):
        # "connection refused 127.0.0.1:1883", "TLS error: ...", "refused by the broker:
        # Not authorized". /ready, /api/v1/status and STATUS= show it.
        self.last_error: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        c = make_client(settings, client_id, clean_session=False, max_inflight=100)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_msg
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._client = c
        # Set by the composition root when OTEL_* turn tracing on (MQTT 5 only: 3.1.1 has
        # no user properties to carry the context in).
        self.tracer: Any = None

    # -- paho thread callbacks -> asyncio loop --------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("mqtt connect refused: %s", reason_code)
            self.last_error = f"refused by the broker: {reason_code}"
            return
        self.last_error = None
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._set_connected)

    def _set_connected(self) -> None:
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self.connected.set()
        log.info("mqtt connected to %s:%s", self.settings.host, self.settings.port)
        if self._on_connect_cb is not None:
            self._spawn(self._on_connect_cb())

    def _on_connect_fail(self, client, userdata) -> None:  # type: ignore[no-untyped-def]
        # paho calls this inside its ``except OSError`` around the connect, without the
        # exception: it is the one being handled.
        self.last_error = self.describe_error(sys.exc_info()[1])

    def describe_error(self, exc: BaseException | None) -> str:
        where = f"{self.settings.host}:{self.settings.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS error: certificate verify failed: {exc.verify_message} ({where})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error: {exc.reason or exc} ({where})"
        if isinstance(exc, ConnectionRefusedError):
            return f"connection refused {where}"
        if isinstance(exc, TimeoutError):
            return f"connection timed out {where}"
        if isinstance(exc, OSError):
            return f"{exc.strerror or exc} {where}".strip()
        return f"connect failed {where}"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure and self.last_error is None:  # keep a refused CONNACK's reason
            self.last_error = f"disconnected: {reason_code}"
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.connected.clear)
        log.info("mqtt disconnected: %s", reason_code)

    def _on_msg(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            carrier = user_properties(msg) if self.tracer is not None else {}
            self._loop.call_soon_threadsafe(self._dispatch, msg.topic, bytes(msg.payload), carrier)

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:  # type: ignore[no-untyped-def]
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._acked, mid)

    def _acked(self, mid: int) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _dispatch(self, topic: str, payload: bytes, carrier: dict[str, str]) -> None:
        self._spawn(self._handle(topic, payload, carrier))

    async def _handle(self, topic: str, payload: bytes, carrier: dict[str, str]) -> None:
        try:
            if self.tracer is None:
                await self._on_message(topic, payload)
                return
            parsed = topics.parse_down(topic)
            name = f"mqtt.receive {parsed[1] if parsed else topic}"
            with self.tracer.start_as_current_span(
                name,
                context=farmiq_tracing.extract(carrier) if carrier else None,
                kind=farmiq_tracing.consumer_kind(),
                attributes={"messaging.system": "mqtt", "messaging.destination.name": topic},
            ):
                await self._on_message(topic, payload)
        except Exception:  # a bad message must never take the daemon down
            log.exception("handler failed for message on %s", topic)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- public API ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start connecting; returns at once. The link keeps retrying in the background."""
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            self.settings.keepalive,
            **connect_args(self.settings.protocol, clean_session=False),
        )
        self._client.loop_start()

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self.connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a publish. With the link down paho keeps QoS>0 messages for the session;
        callers that must not lose data use the durable outbox instead."""
        info = self._client.publish(
            topic, payload, qos=qos, retain=retain, properties=self._trace_properties()
        )
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"mqtt publish failed: {mqtt.error_string(info.rc)}")

    def _trace_properties(self) -> Any:
        """The current span's trace context as MQTT 5 user properties (None when off)."""
        if self.tracer is None or self.settings.protocol != "5":
            return None
        return publish_properties(farmiq_tracing.inject())

    async def publish_confirmed(
        self, topic: str, payload: bytes, qos: int = 1, timeout: float = 10.0, retain: bool = False
    ) -> None:
        """Publish and wait for the broker's PUBACK (not proof of delivery; see NOTES)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # on_publish reaches us through call_soon_threadsafe, so it cannot run before this
        # coroutine yields: registering the future after publish() is race-free.
        info = self._client.publish(
            topic, payload, qos=qos, retain=retain, properties=self._trace_properties()
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"mqtt publish failed: {mqtt.error_string(info.rc)}")
        self._acks[info.mid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._acks.pop(info.mid, None)
            raise TimeoutError("no PUBACK from the broker") from None

    async def stop(self, final: tuple[str, bytes] | None = None) -> None:
        """Disconnect; ``final`` (topic, payload) is published retained first, confirmed."""
        if final is not None and self.connected.is_set():
            try:
                await self.publish_confirmed(final[0], final[1], timeout=2.0, retain=True)
            except (ConnectionError, TimeoutError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        for task in list(self._tasks):
            task.cancel()
