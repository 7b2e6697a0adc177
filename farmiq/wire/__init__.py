"""Every MQTT message's home: the topic tree (``farmiq.topics``) and one pydantic model per
leaf (``farmiq.wire.messages``), used by both the gateway and the control plane.

``LEAVES`` is the table: leaf -> (direction, retained, model). A side's dispatch registers
``leaf -> (model, handler)``; see edge_agent/uplink/dispatch.py for the gateway's.
A new leaf: add its name in ``farmiq/topics.py``, its model in ``messages.py``, its row
here, then register a handler on the side that receives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from farmiq import topics
from farmiq.wire import messages
from farmiq.wire.drift_layout import ColumnLayout
from farmiq.wire.messages import (
    Ack,
    ActuatorCommand,
    ActuatorResult,
    Chunk,
    CloudFeatures,
    ConceptEvent,
    DesiredState,
    DriftWindow,
    HealthReport,
    InstallResult,
    ReportedState,
    ShadowReport,
    TransferRequest,
    TrustAnswer,
)


@dataclass(frozen=True)
class Leaf:
    name: str
    direction: Literal["down", "up"]
    retained: bool
    model: type | None  # None: raw bytes (bundle, TUF root metadata, status text)


LEAVES: dict[tuple[str, str], Leaf] = {
    (leaf.direction, leaf.name): leaf
    for leaf in (
        Leaf(topics.DESIRED, "down", True, DesiredState),
        Leaf(topics.BUNDLE, "down", False, None),  # a signed bundle (docs/bundle-format.md)
        Leaf(topics.CHUNK, "down", False, Chunk),
        Leaf(topics.TRUST, "down", True, None),  # signed TUF root metadata
        Leaf(topics.FEATURES, "down", False, CloudFeatures),
        Leaf(topics.ACTUATOR, "down", False, ActuatorCommand),
        Leaf(topics.OUTBOX_ACK, "down", False, Ack),
        Leaf(topics.STATUS, "up", True, None),  # "online" / "offline"
        Leaf(topics.STATE, "up", True, ReportedState),
        Leaf(topics.INSTALL_ACK, "up", False, InstallResult),
        Leaf(topics.TRANSFER, "up", False, TransferRequest),
        Leaf(topics.HEALTH, "up", False, HealthReport),
        Leaf(topics.SHADOW, "up", False, ShadowReport),
        Leaf(topics.DRIFT, "up", False, DriftWindow),  # or ConceptEvent ("type")
        Leaf(topics.ACTUATOR_RESULT, "up", False, ActuatorResult),
        Leaf(topics.TRUST, "up", False, TrustAnswer),
    )
}

__all__ = [
    "LEAVES",
    "Ack",
    "ActuatorCommand",
    "ActuatorResult",
    "Chunk",
    "CloudFeatures",
    "ColumnLayout",
    "ConceptEvent",
    "DesiredState",
    "DriftWindow",
    "HealthReport",
    "InstallResult",
    "Leaf",
    "ReportedState",
    "ShadowReport",
    "TransferRequest",
    "TrustAnswer",
    "messages",
    "topics",
]
