"""Wire formats of fleet rollouts, shared by the control plane, the agent and the simulator.

See docs/rollout.md for the protocol. Three messages matter:

* ``down/desired`` (retained, JSON): what the gateway should run, with the chunk hashes
  of each bundle and the versions it must never install (rolled back);
* ``up/transfer`` (JSON): "send me chunks i, j, k of bundle B" plus progress; the
  gateway's request *is* the application-level acknowledgement of what it already has;
* ``down/chunk`` (binary): ``MAGIC | u16 header length | JSON header | chunk bytes``.

Kept free of heavy imports: the agent loads it.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

CHUNK_MAGIC = b"FQC1"
DEFAULT_CHUNK_SIZE = 256 * 1024
_HDR = struct.Struct(">4sH")
MAX_CHUNK_SIZE = 64 * 1024 * 1024  # one MQTT message; brokers cap payloads well below 256 MB
# Bundle ids name directories on the gateway (transfers/<bundle_id>/): a file name, never a
# path ("../x", "/x", "." and ".." are refused by the leading character and the charset).
BUNDLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"


class WireError(ValueError):
    """A message that does not follow the protocol (logged and dropped, never fatal)."""


class DesiredModel(BaseModel):
    """One model's desired state on one gateway."""

    model_config = ConfigDict(extra="ignore")
    version: int | None = Field(default=None, ge=1)  # None: nothing to install, only blocks
    bundle_id: str | None = Field(default=None, pattern=BUNDLE_ID_PATTERN)
    size: int = Field(default=0, ge=0)
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=MAX_CHUNK_SIZE)
    chunks: list[str] = []  # sha256 of each chunk, in order
    mode: Literal["install", "shadow"] = "install"
    rollout: str | None = None
    blocked: list[int] = []  # versions rolled back: never install them

    @model_validator(mode="after")
    def _chunks_cover_size(self) -> DesiredModel:
        # The receiver writes chunk i at i * chunk_size and reads min(chunk_size, rest)
        # bytes back: a chunk list that does not tile ``size`` exactly would make it read
        # negative lengths or past the end.
        if self.chunks and len(self.chunks) != -(-self.size // self.chunk_size):
            raise ValueError(
                f"{len(self.chunks)} chunks of {self.chunk_size} B do not make {self.size} B"
            )
        for h in self.chunks:
            if len(h) != 64 or h.strip("0123456789abcdef"):
                raise ValueError("chunk hashes must be sha256 hex digests")
        return self


class DesiredDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")
    rev: int = 0
    issued: float = 0.0
    models: dict[str, DesiredModel] = {}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def parse(cls, payload: bytes) -> DesiredDoc:
        try:
            return cls.model_validate_json(payload)
        except ValueError as exc:
            raise WireError(f"bad desired state: {exc}") from None


def chunk_hashes(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[str]:
    return [
        hashlib.sha256(data[i : i + chunk_size]).hexdigest()
        for i in range(0, len(data), chunk_size)
    ]


def desired_for_bundle(
    data: bytes, *, version: int, bundle_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE, **extra: Any
) -> DesiredModel:
    return DesiredModel(
        version=version,
        bundle_id=bundle_id,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk_size=chunk_size,
        chunks=chunk_hashes(data, chunk_size),
        **extra,
    )


def encode_chunk(bundle_id: str, index: int, total: int, data: bytes) -> bytes:
    header = orjson.dumps({"b": bundle_id, "i": index, "n": total})
    return _HDR.pack(CHUNK_MAGIC, len(header)) + header + data


def decode_chunk(payload: bytes) -> tuple[str, int, int, bytes]:
    """-> (bundle_id, index, total, data). The data is checked by the receiver against the
    chunk hash from the desired state, not against anything in this message."""
    if len(payload) < _HDR.size:
        raise WireError("chunk too short")
    magic, hlen = _HDR.unpack_from(payload)
    if magic != CHUNK_MAGIC or len(payload) < _HDR.size + hlen:
        raise WireError("not a chunk message")
    try:
        h = orjson.loads(payload[_HDR.size : _HDR.size + hlen])
        bundle_id, index, total = str(h["b"]), int(h["i"]), int(h["n"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise WireError("bad chunk header") from None
    return bundle_id, index, total, payload[_HDR.size + hlen :]


def transfer_request(bundle_id: str, chunks: list[int], **progress: Any) -> bytes:
    return orjson.dumps({"bundle_id": bundle_id, "chunks": chunks, **progress})
