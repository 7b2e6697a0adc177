"""One pydantic model per MQTT leaf: what each message on ``farmiq/v1/gw/{id}/...`` holds.

Both sides use these: the gateway to check what arrives on ``down/<leaf>`` (and to build
what it sends), the control plane to check what arrives on ``up/<leaf>`` before it is
stored (control_plane/gateway_reports.py, control_plane/drift/ingest.py). Each model names
the fields that code reads; other fields pass through (``extra="allow"``) so that an older
or newer peer is not refused for what it adds. Binary leaves (``down/chunk``, a bundle,
TUF root metadata) have their decoders here too.

Kept light (pydantic and orjson only): the gateway imports it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from farmiq.quantile_sketch import MAX_ENCODED
from farmiq.rollout_wire import DesiredDoc, decode_chunk, encode_chunk

_Count = Field(default=0, ge=0, le=2**62)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- cloud -> gateway ("down") ---------------------------------------------------------------
DesiredState = DesiredDoc  # down/desired (retained)


class Chunk(BaseModel):
    """down/chunk: ``MAGIC | u16 header length | JSON header | chunk bytes`` (binary)."""

    bundle_id: str
    index: int = Field(ge=0)
    total: int = Field(ge=1)
    data: bytes

    @classmethod
    def decode(cls, payload: bytes) -> Chunk:
        b, i, n, data = decode_chunk(payload)
        return cls(bundle_id=b, index=i, total=n, data=data)

    def encode(self) -> bytes:
        return encode_chunk(self.bundle_id, self.index, self.total, self.data)


class ActuatorCommand(Message):
    """down/actuator: an actuator command with its idempotency id."""

    command_id: str = Field(min_length=1, max_length=64)
    actuator: str = Field(min_length=1, max_length=64)
    value: float = Field(allow_inf_nan=False)
    mcu: str | None = Field(default=None, max_length=64)

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class FeatureRow(Message):
    entity_id: str
    event_ts: float | None = None
    values: dict[str, Any]

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class CloudFeatures(Message):
    """down/features: cloud-side features for the gateway's entities."""

    kind: Literal["farmiq-features/1"]
    views: dict[str, list[FeatureRow]]


class Ack(Message):
    """down/ack: the outbox items the control plane stored."""

    keys: list[Any]  # non-string keys are skipped by the outbox, not the whole ack


# -- gateway -> cloud ("up") -----------------------------------------------------------------
class McuState(Message):
    """One MCU in up/state (firmware_bridge.manager.MCUManager.describe)."""

    id: str = Field(max_length=255)  # HELLO's str8 fields
    firmware: str | None = Field(default=None, max_length=255)
    online: bool = False
    models: list[dict[str, Any]] = Field(default=[], max_length=64)
    slots: list[dict[str, Any]] = Field(default=[], max_length=16)
    link: dict[str, Any] = {}


class ReportedState(Message):
    """up/state (retained): agent version, models, feature schema, MCUs, resources."""

    farm_id: str | None = Field(default=None, max_length=64)
    hardware_class: str | None = Field(default=None, max_length=64)
    tags: list[str] = []
    models: dict[str, dict[str, Any]] = {}
    entities: dict[str, list[str]] | None = None
    trust_root_version: int | None = Field(default=None, ge=1)
    # firmware_bridge.manager.MCUManager.describe(): id, firmware, budget, models, slots,
    # link health (docs/mcu-protocol.md section 5)
    mcus: list[McuState] = Field(default=[], max_length=256)


class InstallResult(Message):
    """up/install: ok, or rejected with a code and reason."""

    ok: bool = False
    bundle_id: str | None = Field(default=None, max_length=128)
    code: str | None = Field(default=None, max_length=64)
    reason: str | None = None
    rollout: str | None = Field(default=None, max_length=64)
    version: int | None = None


class ModelHealth(Message):
    version: int | None = None
    requests: int = _Count
    errors: int = _Count
    p99_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class HealthReport(Message):
    """up/health: per-model serving health for rollout gates."""

    models: dict[str, ModelHealth] = {}


class ShadowReport(Message):
    """up/shadow: agreement of a shadow candidate with the served model."""

    model: str = Field(min_length=1, max_length=256)
    candidate_version: int | None = None
    rows: int = _Count
    agree: int = _Count


class DriftColumn(BaseModel):
    """One column of a drift window: histogram counts in the reference's bins. Unknown
    fields are ignored, not kept: the control plane stores the window's bytes as received
    (and keeping extras costs a third of the validation on a fleet burst)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["numeric", "categorical"] | None = None
    counts: list[int] = Field(min_length=1)
    missing: int = _Count
    invalid: int = _Count
    min: float | None = None
    max: float | None = None
    # numeric columns: the KLL quantile sketch, base64 (farmiq/quantile_sketch.py); its
    # bytes are checked where they are decoded, not here (the ingest path stays cheap)
    kll: str | None = Field(default=None, max_length=MAX_ENCODED)


class ExpectedAccuracySums(Message):
    """A window's label-free estimate (farmiq/cbpe.py) as sums, so windows merge by
    adding: expected accuracy = sum / rows, its standard error = sqrt(var) / rows."""

    rows: int = Field(ge=1, lt=2**63)
    sum: float = Field(ge=0, allow_inf_nan=False)
    var: float = Field(ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounded(self) -> ExpectedAccuracySums:
        if self.sum > self.rows * (1 + 1e-9) or self.var > self.rows:
            raise ValueError("expected accuracy sums exceed the rows")
        return self


class DriftWindow(Message):
    """up/drift: one window of input (and prediction) statistics (docs/drift.md)."""

    type: Literal["drift_window"] | None = None
    format: str | None = None  # "farmiq-drift-window/1"
    id: str = Field(min_length=1, max_length=255)
    key: str | None = None
    device_id: str | None = None
    farm_id: str | None = Field(default=None, max_length=64)
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    schema_: str = Field(alias="schema", max_length=32)
    start: float = Field(allow_inf_nan=False)
    end: float = Field(allow_inf_nan=False)
    n: int = Field(ge=0, lt=2**63)
    features: dict[str, DriftColumn] = Field(min_length=1)
    prediction: DriftColumn | None = None
    expected_accuracy: ExpectedAccuracySums | None = None

    # extras ignored for the same reason as DriftColumn's (the raw window is what is stored)
    model_config = ConfigDict(extra="ignore", populate_by_name=True, coerce_numbers_to_str=True)


class ConceptEvent(Message):
    """up/drift with ``"type": "concept_drift"``: a concept-drift detector changed state."""

    type: Literal["concept_drift"]
    model: str = Field(min_length=1, max_length=128)
    detector: str = Field(max_length=16)
    previous: str = ""
    state: Literal["stable", "warning", "drift"]
    n_seen: int = _Count
    estimate: float = 0.0
    at: float
    key: str | None = None

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class ActuatorResult(Message):
    """up/actuator_result (through the outbox): what the MCU did."""

    command_id: str = Field(default="", max_length=64)
    ok: bool = False
    key: str | None = Field(default=None, min_length=1, max_length=255)


class TrustAnswer(Message):
    """up/trust: the gateway's answer to a root rotation."""

    ok: bool
    code: str
    reason: str
    version: int | None = None


class TransferRequest(Message):
    """up/transfer: chunk requests (the application-level acknowledgement) and progress."""

    bundle_id: str
    chunks: list[int] = []
