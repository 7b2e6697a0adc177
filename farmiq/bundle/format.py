"""The bundle manifest and the on-disk container (an uncompressed POSIX tar).

The manifest is canonical JSON (sorted keys, no whitespace, UTF-8) so that the bytes that
were signed are the bytes that are verified, whatever tool re-serialises them.
"""

from __future__ import annotations

import io
import re
import tarfile
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

FORMAT: Literal["farmiq-bundle/1"] = "farmiq-bundle/1"
MANIFEST = "manifest.json"
SIGNATURES = "signatures.json"
RESERVED = (MANIFEST, SIGNATURES)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MEMBER_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?$")
# A release number as the agent compares it (edge_agent/installer.py): 1 to 3 numeric
# parts, optionally a PEP 440 pre/post/dev suffix ("0.4.0", "1.2", "1.3.0rc1").
VERSION_RE = re.compile(r"^\d{1,6}(\.\d{1,6}){0,2}((a|b|rc|\.post|\.dev)\d{1,6})?$")

DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool", "string")


def canonical_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def utcnow_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str
    shape: list[int | None]  # None (or -1) marks a dynamic axis, normally the batch axis
    allow_nan: bool = False

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"unknown dtype {v!r}; expected one of {', '.join(DTYPES)}")
        return v


class MemberInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class FeatureSchemaRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str


class Targeting(BaseModel):
    """Which gateways may install the bundle (Uptane's director role, reduced)."""

    model_config = ConfigDict(extra="forbid")
    devices: list[str] = []  # empty: any device
    hardware: list[str] = []  # empty: any hardware class


class Serving(BaseModel):
    """How the agent serves the model: targets by preference, batching, cascade."""

    model_config = ConfigDict(extra="forbid")
    targets: list[Literal["edge", "mcu", "cloud", "serverless"]] = ["edge", "cloud"]
    max_batch: int = Field(default=64, ge=1, le=4096)
    max_delay_ms: float = Field(default=2.0, ge=0, le=1000)
    confidence_threshold: float | None = Field(default=None, ge=0, le=1)
    fp16: bool = False
    cloud_model: str | None = None  # name on the cloud Triton when it differs


class DatasetRef(BaseModel):
    """A training dataset as MLflow records it (``mlflow.log_input``)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    digest: str | None = None
    source: str | None = None  # e.g. a URI of the data


class Lineage(BaseModel):
    """Where the model came from: the MLflow run that made it and the data it saw."""

    model_config = ConfigDict(extra="forbid")
    run_id: str | None = None  # the MLflow run that logged (or trained) the model
    source_uri: str | None = None  # what was registered, e.g. runs:/<id>/model
    flavor: str | None = None  # onnx, sklearn, tflite
    dataset: DatasetRef | None = None
    parent_version: int | None = None  # the version a retraining started from
    data_window: list[float] | None = None  # [start, end] epoch seconds of the training data


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["farmiq-bundle/1"] = FORMAT
    bundle_id: str
    name: str
    version: int = Field(ge=1)
    runtime: Literal["onnxruntime", "litert", "mcu-tflite"] = "onnxruntime"
    model_file: str
    task: Literal["classification", "regression"] = "classification"
    labels: list[str] | None = None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    feature_names: list[str] = []
    feature_schema: FeatureSchemaRef | None = None
    preprocessing: dict[str, Any] = {}
    reference: str | None = None  # member holding drift reference statistics
    members: dict[str, MemberInfo]
    created: str
    expires: str | None = None
    min_agent_version: str = "0.1.0"
    targeting: Targeting = Targeting()
    serving: Serving = Serving()
    rollback_of: int | None = None  # set only on a signed rollback order
    registry_uri: str | None = None  # provenance, e.g. models:/barn-ventilation/3
    # Optional and left out of the manifest when absent, so bundles made before it existed
    # keep their canonical bytes (and signatures).
    lineage: Lineage | None = None
    # Member holding the label-free estimate's calibration (farmiq/cbpe.py): top-class
    # confidence -> P(correct), fitted on a labelled holdout at registration.
    calibration: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("model names are lower-case letters, digits, '_', '.', '-'")
        return v

    @field_validator("expires")
    @classmethod
    def _aware_timestamp(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{v!r} is not an ISO 8601 timestamp") from None
        if t.tzinfo is None:
            raise ValueError(f"{v!r} has no time zone (use UTC: ...Z)")
        return v

    @field_validator("min_agent_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError(f"min_agent_version {v!r} is not a version like 0.4.0")
        return v

    @field_validator("members")
    @classmethod
    def _member_paths(cls, v: dict[str, MemberInfo]) -> dict[str, MemberInfo]:
        for path in v:
            if path in RESERVED or not MEMBER_RE.match(path) or ".." in path.split("/"):
                raise ValueError(f"illegal member path {path!r}")
        return v

    def canonical(self) -> bytes:
        doc = self.model_dump(mode="json")
        for optional in ("lineage", "calibration"):
            if doc.get(optional) is None:
                doc.pop(optional, None)
        return canonical_json(doc)


def pack(
    manifest_bytes: bytes, signatures: list[dict[str, str]], members: dict[str, bytes]
) -> bytes:
    """Write the container: manifest, signatures, then members in sorted order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0  # reproducible bundles
            tar.addfile(info, io.BytesIO(data))

        add(MANIFEST, manifest_bytes)
        add(SIGNATURES, canonical_json({"signatures": signatures}))
        for name in sorted(members):
            add(name, members[name])
    return buf.getvalue()
