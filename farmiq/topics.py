"""The MQTT topic tree. One place, so ACLs, docs and code agree.

A gateway ``{id}`` subscribes only to ``farmiq/v1/gw/{id}/down/#`` and publishes only to
``farmiq/v1/gw/{id}/up/#``; the broker ACL enforces exactly that (see provisioning,
which takes ``ROOT`` from here). What each leaf carries is one model in ``farmiq.wire``
(``farmiq.wire.LEAVES``: leaf -> direction, retained, model).
"""

from __future__ import annotations

ROOT = "farmiq/v1"


MAX_DEVICE_ID = 64  # the width of every device_id column in the control plane's database


def _forbidden_in_topic(c: str) -> bool:
    """Characters a broker refuses in a topic name (MQTT 3.1.1 section 1.5.3 as Mosquitto
    enforces it: control characters, surrogates, non-characters). A client that publishes
    one is disconnected for a malformed packet, and paho re-sends the QoS 1 message after
    every reconnect: one such publish cuts the sender off the broker for good."""
    o = ord(c)
    return (
        o <= 0x1F
        or 0x7F <= o <= 0x9F
        or 0xD800 <= o <= 0xDFFF
        or 0xFDD0 <= o <= 0xFDEF
        or (o & 0xFFFF) in (0xFFFE, 0xFFFF)
    )


def check_device_id(device_id: str) -> str:
    """``device_id`` if it can name a gateway's topics; else ValueError saying why."""
    if not isinstance(device_id, str) or not device_id:
        raise ValueError("a device id must be a non-empty string")
    if len(device_id) > MAX_DEVICE_ID:
        raise ValueError(f"device id longer than {MAX_DEVICE_ID} characters: {device_id[:80]!r}")
    bad = [c for c in device_id if c in "/+#" or _forbidden_in_topic(c)]
    if bad:
        raise ValueError(
            f"invalid device id for a topic: {device_id!r} (contains {bad[0]!r}; "
            "'/', '+', '#' and control characters are not allowed)"
        )
    return device_id


def is_device_id(device_id: str) -> bool:
    try:
        check_device_id(device_id)
    except ValueError:
        return False
    return True


def check_topic(topic: str) -> str:
    """``topic`` if a broker accepts it as a topic name to publish to; else ValueError."""
    if not topic or len(topic.encode("utf-8", "surrogatepass")) > 65535:
        raise ValueError("an MQTT topic must be 1..65535 bytes")
    if any(c in "+#" or _forbidden_in_topic(c) for c in topic):
        raise ValueError(f"invalid MQTT topic name: {topic!r}")
    return topic


def gw(device_id: str) -> str:
    return f"{ROOT}/gw/{check_device_id(device_id)}"


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
