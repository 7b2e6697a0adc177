"""The one alert model every alert source fills in and every sink sends as it is.

A routing key is ``<kind>.<severity>`` (RabbitMQ topic exchange), so a consumer binds
``rollout_*.#`` or ``#.critical``; kinds use underscores, never dots, so the key always has
two words. ``dedup_key`` names the condition, not the message: the bus suppresses a repeat
within its window, and receivers can use it to merge repeats of their own.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Kind(StrEnum):
    DRIFT = "drift"
    CONCEPT_DRIFT = "concept_drift"
    RETRAINING_DECIDED = "retraining_decided"
    RETRAINING_STARTED = "retraining_started"
    RETRAINING_FINISHED = "retraining_finished"
    # The learning loop (control_plane/learning): what became of a retrained candidate.
    CANDIDATE_REFUSED = "candidate_refused"
    CANDIDATE_REJECTED = "candidate_rejected"
    CANDIDATE_SHADOWING = "candidate_shadowing"
    CANDIDATE_AWAITING_APPROVAL = "candidate_awaiting_approval"
    CANDIDATE_PROMOTED = "candidate_promoted"
    LEARNING_ROLLOUT_STARTED = "learning_rollout_started"
    ROLLOUT_PAUSED = "rollout_paused"
    ROLLOUT_ABORTED = "rollout_aborted"
    ROLLOUT_FAILED = "rollout_failed"
    ROLLOUT_SUCCEEDED = "rollout_succeeded"
    GATEWAY_OFFLINE = "gateway_offline"
    GATEWAY_ONLINE = "gateway_online"
    INSTALL_REJECTED = "install_rejected"
    MCU_FAULT = "mcu_fault"
    BREAKER_OPEN = "breaker_open"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind
    severity: Severity
    message: str = Field(min_length=1, max_length=2000)
    model: str | None = None
    version: int | None = None
    device_id: str | None = None
    farm_id: str | None = None
    links: dict[str, str] = {}  # name -> URL or path ("rollout": "/api/v1/rollouts/r1")
    dedup_key: str = ""  # default: kind + model + version + device
    details: dict[str, Any] = {}
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = Field(default_factory=time.time)

    def model_post_init(self, __context: Any) -> None:
        if not self.dedup_key:
            parts = [
                self.kind.value,
                self.model or "",
                str(self.version or ""),
                self.device_id or "",
            ]
            self.dedup_key = ":".join(parts)

    @property
    def routing_key(self) -> str:
        return f"{self.kind.value}.{self.severity.value}"

    def body(self) -> bytes:
        return self.model_dump_json().encode()
