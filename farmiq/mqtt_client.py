"""One way to make a paho-mqtt 2.x client, for the agent and the control plane alike:
credentials, TLS with client certificates, unlimited local queue while the link is down,
reconnect backoff, and the protocol version.

MQTT 5 by default (Mosquitto 2 speaks it): its user properties carry the W3C
``traceparent`` of a message (docs/operations.md, "Traces"), so one trace runs from an
operator's request through the broker to the gateway and its MCU. ``protocol = "3.1.1"``
is for brokers that speak only that (the demo's embedded amqtt broker); messages then
carry no trace context and nothing else changes.

A persistent session (the agent's: QoS 1 messages sent while the gateway was away are
delivered when it reconnects) is ``clean_start=False`` with a session expiry interval in
MQTT 5, where 3.1.1 had ``clean_session=False``; the interval is the protocol's maximum,
"never expires", which is what 3.1.1's persistent session was.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MqttProtocol = Literal["5", "3.1.1"]
NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry interval: the session outlives any outage


class BrokerSettings(Protocol):
    username: str | None
    password: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    protocol: MqttProtocol


def make_client(
    settings: BrokerSettings, client_id: str, *, clean_session: bool, max_inflight: int
) -> mqtt.Client:
    if settings.protocol == "5":
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
    c.max_inflight_messages_set(max_inflight)
    c.max_queued_messages_set(0)  # 0: unlimited; the durable outbox bounds what matters
    c.reconnect_delay_set(min_delay=1, max_delay=30)
    if settings.username:
        c.username_pw_set(settings.username, settings.password)
    if settings.tls_ca:
        ctx = ssl.create_default_context(cafile=str(settings.tls_ca))
        if settings.tls_cert and settings.tls_key:
            ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        c.tls_set_context(ctx)
    return c


def connect_args(protocol: MqttProtocol, *, clean_session: bool) -> dict[str, Any]:
    """The session arguments of ``connect_async`` for the protocol (3.1.1: set on the
    client already). Every reconnect reuses them, so a persistent session stays one."""
    if protocol != "5":
        return {}
    if clean_session:
        return {"clean_start": True}
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = NEVER_EXPIRES
    return {"clean_start": False, "properties": props}


def publish_properties(carrier: Mapping[str, str]) -> Properties | None:
    """MQTT 5 PUBLISH properties holding ``carrier`` (trace context) as user properties."""
    if not carrier:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = list(carrier.items())
    return props


def user_properties(msg: mqtt.MQTTMessage) -> dict[str, str]:
    """A received message's MQTT 5 user properties (none for 3.1.1)."""
    props = getattr(msg, "properties", None)
    pairs = getattr(props, "UserProperty", None) if props is not None else None
    return {str(k): str(v) for k, v in pairs} if pairs else {}
