"""One way to make a paho-mqtt 2.x client, for the agent and the control plane alike:
MQTT 3.1.1 (Mosquitto and the demo's embedded broker both speak it), credentials, TLS with
client certificates, unlimited local queue while the link is down, reconnect backoff."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt


class BrokerSettings(Protocol):
    username: str | None
    password: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None


def make_client(
    settings: BrokerSettings, client_id: str, *, clean_session: bool, max_inflight: int
) -> mqtt.Client:
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
