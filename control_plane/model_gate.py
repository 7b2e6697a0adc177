"""The gate before any device: can a gateway serve this model?

At registration and again at bundle build the control plane loads the model in the
runtime a gateway would use (ONNX Runtime, or LiteRT for ``litert`` and ``mcu-tflite``),
runs rows through it the way the agent does (the MLflow input example, else the drift
reference's sample, else rows generated from the input specs) and refuses, naming the
problem, whatever a gateway could not answer: outputs that are not plain tensors
(skl2onnx's ZipMap), ops the runtime lacks, inputs whose shape rows cannot fill, answers
with NaN or infinity, answers whose batch axis or class count is wrong.

Pure checks: bytes and specs in, a ``GateReport`` out or a ``GateError`` raised. The
registry and the bundle builder call it; they own the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from farmiq.bundle.builder import ORT_DTYPES as _ORT_TENSOR
from farmiq.bundle.format import TensorSpec

_NUMERIC_INPUTS = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool")
GENERATED_ROWS = 8


class GateError(ValueError):
    """The model cannot be served by a gateway; the message says why (an HTTP 422)."""


@dataclass
class GateReport:
    runtime: str
    rows: int
    source: str  # where the rows came from: input example, reference sample, generated
    outputs: dict[str, list[int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _rows_from_specs(inputs: list[TensorSpec], n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = [n if i == 0 and d is None else d for i, d in enumerate(spec.shape)]
        if any(d is None for d in shape):
            raise GateError(
                f"input {spec.name!r} has shape {spec.shape}: only the batch axis may be "
                "dynamic, so give the model fixed feature axes (or an MLflow signature)"
            )
        dims = [int(d) for d in shape]  # type: ignore[arg-type]
        if spec.dtype == "bool":
            out[spec.name] = rng.integers(0, 2, dims).astype(bool)
        elif spec.dtype.startswith(("int", "uint")):
            out[spec.name] = rng.integers(0, 4, dims).astype(spec.dtype)
        else:
            out[spec.name] = rng.normal(0, 1, dims).astype(spec.dtype)
    return out


def _rows(
    inputs: list[TensorSpec], example: Any, sample: list[list[Any]] | None
) -> tuple[dict[str, np.ndarray], str]:
    for spec in inputs:
        if spec.dtype not in _NUMERIC_INPUTS:
            raise GateError(
                f"input {spec.name!r} is {spec.dtype}: gateways send numeric tensors only"
            )
    if example is not None:
        if isinstance(example, dict):
            arrays = {k: np.asarray(v) for k, v in example.items()}
        else:
            if len(inputs) != 1:
                raise GateError(
                    f"the input example is one array but the model has {len(inputs)} inputs"
                )
            arrays = {inputs[0].name: np.asarray(example)}
        return _cast(inputs, arrays, "the input example"), "input example"
    if sample and len(inputs) == 1 and len(inputs[0].shape) == 2:
        width = inputs[0].shape[1]
        rows = [r[:width] for r in sample[:GENERATED_ROWS] if width is not None]
        if rows and all(len(r) == width for r in rows):
            try:
                arr = np.asarray(rows, dtype=np.float64)
            except (TypeError, ValueError):
                arr = None
            if arr is not None and np.isfinite(arr).all():
                return _cast(inputs, {inputs[0].name: arr}, "the reference sample"), (
                    "reference sample"
                )
    return _rows_from_specs(inputs, GENERATED_ROWS), "generated from the input specs"


def _cast(
    inputs: list[TensorSpec], arrays: dict[str, np.ndarray], what: str
) -> dict[str, np.ndarray]:
    out = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise GateError(f"{what} has no input {spec.name!r} (has {sorted(arrays)})")
        arr = arrays[spec.name]
        if arr.ndim == len(spec.shape) - 1:
            arr = arr[None, ...]
        if arr.ndim != len(spec.shape):
            raise GateError(
                f"{what} for {spec.name!r} has shape {list(arr.shape)}, the model takes "
                f"{spec.shape}"
            )
        for axis, (have, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if want is not None and axis > 0 and have != want:
                raise GateError(
                    f"{what} for {spec.name!r} has shape {list(arr.shape)}, the model takes "
                    f"{spec.shape}"
                )
        try:
            out[spec.name] = arr.astype(spec.dtype)
        except (TypeError, ValueError) as exc:
            raise GateError(f"{what} for {spec.name!r} is not {spec.dtype}: {exc}") from None
    return out


def _run_onnx(
    model_bytes: bytes, inputs: list[TensorSpec], outputs: list[TensorSpec], feed: dict[str, Any]
) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types (bad ops, bad graph)
        raise GateError(f"ONNX Runtime cannot load the model: {_short(exc)}") from None
    have_out = {o.name: o.type for o in sess.get_outputs()}
    for name, kind in have_out.items():
        if kind not in _ORT_TENSOR:
            hint = (
                " (skl2onnx's ZipMap: convert with options={id(model): {'zipmap': False}})"
                if "map" in kind
                else ""
            )
            raise GateError(f"output {name!r} is {kind}; a gateway can only return tensors{hint}")
    have_in = [i.name for i in sess.get_inputs()]
    if sorted(have_in) != sorted(s.name for s in inputs):
        raise GateError(
            f"the declared inputs {[s.name for s in inputs]} are not the model's {have_in}"
        )
    for spec in outputs:
        if spec.name not in have_out:
            raise GateError(f"the model has no output {spec.name!r} (has {sorted(have_out)})")
    try:
        res = sess.run([s.name for s in outputs], feed)
    except Exception as exc:
        raise GateError(f"ONNX Runtime failed on the rows: {_short(exc)}") from None
    return {s.name: np.asarray(r) for s, r in zip(outputs, res, strict=True)}


def _run_litert(
    model_bytes: bytes, inputs: list[TensorSpec], outputs: list[TensorSpec], feed: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Run as the agent's LiteRT runtime does: specs match tensors by position, quantised
    tensors are (de)quantised with their scale and zero point, batches go row by row when
    the model's batch axis is 1."""
    from farmiq.bundle.builder import _litert_interpreter

    try:
        interp = _litert_interpreter(model_bytes)
        interp.allocate_tensors()
    except Exception as exc:
        raise GateError(f"LiteRT cannot load the model: {_short(exc)}") from None
    din, dout = interp.get_input_details(), interp.get_output_details()
    if len(din) != len(inputs) or len(dout) != len(outputs):
        raise GateError(
            f"the declared specs ({len(inputs)} inputs, {len(outputs)} outputs) do not match "
            f"the model's tensors ({len(din)} inputs, {len(dout)} outputs)"
        )
    n = next(iter(feed.values())).shape[0]
    fixed = int(din[0]["shape"][0]) if len(din[0]["shape"]) else 1
    batches = [slice(i, i + 1) for i in range(n)] if fixed == 1 else [slice(0, n)]
    got: dict[str, list[np.ndarray]] = {s.name: [] for s in outputs}
    for part in batches:
        for spec, d in zip(inputs, din, strict=True):
            arr = feed[spec.name][part]
            if list(arr.shape) != [int(x) for x in d["shape"]]:
                raise GateError(
                    f"input {spec.name!r}: rows of shape {list(arr.shape)} do not fit the "
                    f"model's tensor {[int(x) for x in d['shape']]}"
                )
            scale, zero = d.get("quantization") or (0.0, 0)
            dtype = np.dtype(d["dtype"])
            if scale and dtype.kind in "iu":
                info = np.iinfo(dtype)
                arr = np.clip(np.round(arr / scale + zero), info.min, info.max)
            interp.set_tensor(d["index"], arr.astype(dtype))
        try:
            interp.invoke()
        except Exception as exc:
            raise GateError(f"LiteRT failed on the rows: {_short(exc)}") from None
        for spec, d in zip(outputs, dout, strict=True):
            arr = interp.get_tensor(d["index"])
            scale, zero = d.get("quantization") or (0.0, 0)
            if scale and arr.dtype.kind in "iu":
                arr = (arr.astype(np.float32) - zero) * scale
            got[spec.name].append(np.asarray(arr))
    return {k: np.concatenate(v) for k, v in got.items()}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def check_model(
    model_bytes: bytes,
    *,
    runtime: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    example: Any = None,
    reference_sample: list[list[Any]] | None = None,
    task: str = "classification",
    labels: list[str] | None = None,
) -> GateReport:
    """Load and run the model as a gateway would; raise ``GateError`` naming any fault."""
    if not inputs or not outputs:
        raise GateError("the model declares no inputs or no outputs")
    feed, source = _rows(inputs, example, reference_sample)
    n = next(iter(feed.values())).shape[0]
    if runtime == "onnxruntime":
        res = _run_onnx(model_bytes, inputs, outputs, feed)
    elif runtime in ("litert", "mcu-tflite"):
        res = _run_litert(model_bytes, inputs, outputs, feed)
    else:
        raise GateError(f"unknown runtime {runtime!r}")
    report = GateReport(runtime=runtime, rows=int(n), source=source)
    for spec in outputs:
        arr = res[spec.name]
        report.outputs[spec.name] = [int(d) for d in arr.shape]
        if arr.ndim == 0 or arr.shape[0] != n:
            raise GateError(
                f"output {spec.name!r} has shape {list(arr.shape)} for {n} rows: a gateway "
                "needs one answer per row on the first axis"
            )
        if arr.dtype.kind == "f" and not spec.allow_nan and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).reshape(n, -1).any(axis=1).sum())
            raise GateError(
                f"output {spec.name!r} is NaN or infinite for {bad} of {n} rows "
                f"({source}); a gateway would answer garbage"
            )
        if (
            task == "classification"
            and labels
            and arr.dtype.kind == "f"
            and arr.ndim == 2
            and arr.shape[1] > 1
            and arr.shape[1] != len(labels)
        ):
            raise GateError(
                f"output {spec.name!r} has {arr.shape[1]} classes but {len(labels)} labels "
                f"were given ({', '.join(labels)})"
            )
    return report
