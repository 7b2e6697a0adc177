"""What the control plane accepts from gateways on ``up/...``, checked before it is stored.

Anything a gateway publishes ends up in rows other code reads later: the rollout scheduler
judges gates from stored health and shadow reports and picks targets from stored reported
states; the dashboard and the devices API list them. A report with the wrong types would
not fail where it arrives but later, there, on every tick: one broken gateway would stall
every rollout. So each report is parsed here, against the fields that code reads (other
fields pass through untouched); a report that does not fit is logged in one line and
dropped, and the last good one stays.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from farmiq import topics
from farmiq.wire.messages import (
    ActuatorResult,
    HealthReport,
    InstallResult,
    ModelHealth,
    ReportedState,
    ShadowReport,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=BaseModel)

# The largest report stored as it came (state, health, shadow); real ones are a few KiB.
MAX_REPORT_BYTES = 256 * 1024

# The models of what gateways send live in farmiq/wire (one home, used by both sides).
__all__ = [
    "MAX_REPORT_BYTES",
    "ActuatorResult",
    "HealthReport",
    "InstallAck",
    "ModelHealth",
    "ReportedState",
    "ShadowReport",
    "json_object",
    "parse",
]
InstallAck = InstallResult


def json_object(device_id: str, leaf: str, payload: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object, or None (logged) when it is too big or not one.
    An empty payload is a retained message being cleared (a decommissioned gateway, a
    test's clean-up): None, quietly."""
    if not payload:
        return None
    if len(payload) > MAX_REPORT_BYTES:
        log.warning(
            "%s from %s: %d bytes, over the %d-byte limit; dropped",
            leaf,
            device_id,
            len(payload),
            MAX_REPORT_BYTES,
        )
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        log.warning("%s from %s is not JSON (%s); dropped", leaf, device_id, exc)
        return None
    if not isinstance(doc, dict):
        log.warning("%s from %s is not a JSON object; dropped", leaf, device_id)
        return None
    return doc


def parse(model: type[R], device_id: str, leaf: str, payload: bytes) -> R | None:
    """``payload`` validated as ``model`` (extra fields kept), or None (logged, dropped)."""
    try:
        topics.check_device_id(device_id)
    except ValueError as exc:
        log.warning("%s from an unusable device id: %s; dropped", leaf, exc)
        return None
    doc = json_object(device_id, leaf, payload)
    if doc is None:
        return None
    if "device_id" in doc and doc["device_id"] != device_id:
        log.warning("%s from %s speaks for %r; dropped", leaf, device_id, doc["device_id"])
        return None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        log.warning("%s from %s: %s: %s; dropped", leaf, device_id, where, first["msg"])
        return None
