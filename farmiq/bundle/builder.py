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
    DTYPES,
    MANIFEST,
    SIGNATURES,
    FeatureSchemaRef,
    Lineage,
    Manifest,
    MemberInfo,
    Serving,
    Targeting,
    TensorSpec,
    pack,
    utcnow_iso,
)
from farmiq.bundle.signing import Signer

# ONNX Runtime type strings -> our dtype names (the registration gate uses them too).
ORT_DTYPES = {
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
        dtype = ORT_DTYPES.get(arg.type)
        if dtype is None:  # e.g. sklearn's seq(map) probability outputs
            dtype = "float32"
        return TensorSpec(name=arg.name, dtype=dtype, shape=shape)

    return [spec(i) for i in sess.get_inputs()], [spec(o) for o in sess.get_outputs()]


def _litert_interpreter(model_bytes: bytes) -> Any:
    # LiteRT only: tflite-runtime (its predecessor) fails with numpy 2 (shared/NOTES.md).
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model_bytes)


def tflite_io_specs(model_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output tensor specs of a TFLite/LiteRT model, read with the interpreter.

    Names come from the model's serving signature (``x``, ``output_0``) where it has one,
    because converters name the tensors themselves ``serving_default_x:0``; the agent
    matches manifest specs to tensors by position. A quantised (int8/uint8 with a scale)
    tensor is declared ``float32``: the agent quantises requests and dequantises answers.
    TFLite models have a fixed batch axis; a batch axis of 1 is declared dynamic because
    the agent runs larger batches row by row.
    """
    interp = _litert_interpreter(model_bytes)
    interp.allocate_tensors()
    sig_names: dict[int, str] = {}
    try:
        sigs = interp._get_full_signature_list() or {}
    except AttributeError:
        sigs = {}
    if len(sigs) == 1:
        (sig,) = sigs.values()
        for key in ("inputs", "outputs"):
            for nm, index in (sig.get(key) or {}).items():
                sig_names[int(index)] = nm

    def spec(detail: dict[str, Any]) -> TensorSpec:
        import numpy as np

        dtype = np.dtype(detail["dtype"])
        scale = (detail.get("quantization") or (0.0, 0))[0]
        name = sig_names.get(int(detail["index"]), str(detail["name"]))
        quantised = bool(scale) and dtype.kind in "iu"
        dtype_name = str(dtype) if not quantised and str(dtype) in DTYPES else "float32"
        shape: list[int | None] = [int(d) if d > 0 else None for d in detail["shape_signature"]]
        if shape and shape[0] == 1:
            shape[0] = None
        return TensorSpec(name=name, dtype=dtype_name, shape=shape)

    return (
        [spec(d) for d in interp.get_input_details()],
        [spec(d) for d in interp.get_output_details()],
    )


def io_specs(model_bytes: bytes, runtime: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's own input and output specs, for any bundle runtime."""
    if runtime == "onnxruntime":
        return onnx_io_specs(model_bytes)
    return tflite_io_specs(model_bytes)


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
    lineage: Lineage | dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> bytes:
    """Return the bytes of a signed bundle. ``calibration``: a ``farmiq.cbpe.Calibration``
    as a dict, shipped as ``calibration.json`` for the gateway's label-free estimate."""
    if not signers:
        raise ValueError("a bundle needs at least one signer")
    ext = {"onnxruntime": "onnx", "litert": "tflite", "mcu-tflite": "tflite"}[runtime]
    model_file = f"model/model.{ext}"
    members: dict[str, bytes] = {model_file: model_bytes}
    if reference is not None:
        # Not canonical_json: the reference's feature order is the model's column order.
        members["reference.json"] = orjson.dumps(reference)
    if calibration is not None:
        from farmiq.cbpe import Calibration

        Calibration.from_dict(calibration)  # refuse a malformed one here, not on a gateway
        members["calibration.json"] = orjson.dumps(calibration)
    members.update(extra_members or {})
    if inputs is None or outputs is None:
        read_in, read_out = io_specs(model_bytes, runtime)
        inputs = read_in if inputs is None else inputs
        outputs = read_out if outputs is None else outputs
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
        lineage=Lineage.model_validate(lineage) if lineage else None,
        calibration="calibration.json" if calibration is not None else None,
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
