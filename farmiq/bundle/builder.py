"""Build and co-sign bundles. Used by the control plane and by ``farmiq bundle build``."""

from __future__ import annotations

import hashlib
import io
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from farmiq.bundle.format import (
    MANIFEST,
    SIGNATURES,
    FeatureSchemaRef,
    Manifest,
    MemberInfo,
    Serving,
    Targeting,
    TensorSpec,
    pack,
    utcnow_iso,
)
from farmiq.bundle.signing import Signer

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def onnx_io_specs(model_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output tensor specs of an ONNX model, read with ONNX Runtime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape = [d if isinstance(d, int) and d > 0 else None for d in (arg.shape or [])]
        dtype = _ORT_DTYPES.get(arg.type)
        if dtype is None:  # e.g. sklearn's seq(map) probability outputs
            dtype = "float32"
        return TensorSpec(name=arg.name, dtype=dtype, shape=shape)

    return [spec(i) for i in sess.get_inputs()], [spec(o) for o in sess.get_outputs()]


def build_bundle(
    model_bytes: bytes,
    *,
    name: str,
    version: int,
    signers: list[Signer],
    runtime: str = "onnxruntime",
    task: str = "classification",
    labels: list[str] | None = None,
    feature_names: list[str] | None = None,
    feature_schema: tuple[str, str] | None = None,
    preprocessing: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
    extra_members: dict[str, bytes] | None = None,
    serving: Serving | dict[str, Any] | None = None,
    targeting: Targeting | dict[str, Any] | None = None,
    expires_in: timedelta | None = timedelta(days=365),
    rollback_of: int | None = None,
    registry_uri: str | None = None,
    inputs: list[TensorSpec] | None = None,
    outputs: list[TensorSpec] | None = None,
    min_agent_version: str = "0.1.0",
) -> bytes:
    """Return the bytes of a signed bundle."""
    if not signers:
        raise ValueError("a bundle needs at least one signer")
    ext = {"onnxruntime": "onnx", "litert": "tflite", "mcu-tflite": "tflite"}[runtime]
    model_file = f"model/model.{ext}"
    members: dict[str, bytes] = {model_file: model_bytes}
    if reference is not None:
        # Not canonical_json: the reference's feature order is the model's column order.
        members["reference.json"] = orjson.dumps(reference)
    members.update(extra_members or {})
    if inputs is None or outputs is None:
        if runtime != "onnxruntime":
            raise ValueError("inputs and outputs must be given for non-ONNX runtimes")
        inputs, outputs = onnx_io_specs(model_bytes)
    now = datetime.now(UTC)
    manifest = Manifest(
        bundle_id=str(uuid.uuid4()),
        name=name,
        version=version,
        runtime=runtime,  # type: ignore[arg-type]
        model_file=model_file,
        task=task,  # type: ignore[arg-type]
        labels=labels,
        inputs=inputs,
        outputs=outputs,
        feature_names=feature_names or [],
        feature_schema=(
            FeatureSchemaRef(name=feature_schema[0], version=feature_schema[1])
            if feature_schema
            else None
        ),
        preprocessing=preprocessing or {},
        reference="reference.json" if reference is not None else None,
        members={
            k: MemberInfo(sha256=hashlib.sha256(v).hexdigest(), size=len(v))
            for k, v in members.items()
        },
        created=utcnow_iso(),
        expires=(now + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ") if expires_in else None,
        min_agent_version=min_agent_version,
        targeting=Targeting.model_validate(targeting or {}),
        serving=Serving.model_validate(serving or {}),
        rollback_of=rollback_of,
        registry_uri=registry_uri,
    )
    body = manifest.canonical()
    return pack(body, [s.sign(body) for s in signers], members)


def read_container(bundle: bytes) -> tuple[bytes, list[dict[str, str]], dict[str, bytes]]:
    """Unverified read of a bundle's parts (for inspect and co-signing only)."""
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as tar:
        parts: dict[str, bytes] = {}
        for info in tar.getmembers():
            fh = tar.extractfile(info)
            if fh is not None:
                parts[info.name] = fh.read()
    manifest = parts.pop(MANIFEST)
    sigs = orjson.loads(parts.pop(SIGNATURES, b'{"signatures": []}'))["signatures"]
    return manifest, sigs, parts


def add_signature(bundle: bytes, signer: Signer) -> bytes:
    """Co-sign an existing bundle (for signing thresholds above one)."""
    manifest, sigs, members = read_container(bundle)
    sigs = [s for s in sigs if s.get("keyid") != signer.keyid] + [signer.sign(manifest)]
    return pack(manifest, sigs, members)
