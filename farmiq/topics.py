"""The MQTT topic tree. One place, so ACLs, docs and code agree.

A gateway ``{id}`` subscribes only to ``farmiq/v1/gw/{id}/down/#`` and publishes only to
``farmiq/v1/gw/{id}/up/#``; the broker ACL enforces exactly that (see provisioning).
"""

from __future__ import annotations

ROOT = "farmiq/v1"


def gw(device_id: str) -> str:
    if not device_id or any(c in device_id for c in "/+#\x00"):
        raise ValueError(f"invalid device id for a topic: {device_id!r}")
    return f"{ROOT}/gw/{device_id}"


# cloud -> gateway ("down")
def down(device_id: str, leaf: str) -> str:
    return f"{gw(device_id)}/down/{leaf}"


# gateway -> cloud ("up")
def up(device_id: str, leaf: str) -> str:
    return f"{gw(device_id)}/up/{leaf}"


DOWN_ALL = "down/#"
# Leaves. QoS 1 everywhere; "retained" marks topics whose last message is state.
DESIRED = "desired"  # retained: what the gateway should run (bundle ids, versions)
BUNDLE = "bundle"  # bundle bytes (or chunks, see docs/ARCHITECTURE.md)
ACTUATOR = "actuator"  # actuator command for an MCU
FEATURES = "features"  # cloud-side features (flock age, breed) for this gateway's entities
OUTBOX_ACK = "ack"  # control plane acknowledges stored outbox items by key
TRUST = "trust"  # retained: signed TUF root metadata (a root rotation); the gateway answers
# on up/trust with {"ok", "code", "reason", "version"}
CHUNK = "chunk"  # one hashed chunk of a bundle, answering an up/transfer request (docs/rollout.md)

STATE = "state"  # retained: reported state (agent version, models, schema, resources)
STATUS = "status"  # retained: "online"/"offline" (offline is the last will)
INSTALL_ACK = "install"  # result of a bundle install: ok or rejected with reason
HEALTH = "health"
DRIFT = "drift"
ACTUATOR_RESULT = "actuator_result"
ALERT = "alert"
OUTBOX = "outbox"  # generic durable items from the outbox
TRANSFER = "transfer"  # chunk requests and transfer progress (application-level acks)
SHADOW = "shadow"  # shadow-mode agreement of a candidate model with the served one


# Control-plane alerts for operators' tools (not for gateways): farmiq/v1/cp/alert/<kind>.
def cp_alert(kind: str) -> str:
    return f"{ROOT}/cp/alert/{kind}"


# Control-plane subscriptions (shared subscription so replicas split ingest).
FLEET_UP = f"{ROOT}/gw/+/up/#"
SHARED_GROUP = "farmiq-cp"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    return f"$share/{group}/{topic_filter}"


def parse_up(topic: str) -> tuple[str, str] | None:
    """``farmiq/v1/gw/<id>/up/<leaf...>`` -> (device_id, leaf); else None."""
    parts = topic.split("/")
    if len(parts) >= 6 and parts[:3] == ["farmiq", "v1", "gw"] and parts[4] == "up":
        return parts[3], "/".join(parts[5:])
    return None


def parse_down(topic: str) -> tuple[str, str] | None:
    parts = topic.split("/")
    if len(parts) >= 6 and parts[:3] == ["farmiq", "v1", "gw"] and parts[4] == "down":
        return parts[3], "/".join(parts[5:])
    return None
