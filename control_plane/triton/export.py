"""Write a Triton model repository entry for a model (from a bundle or the registry).

Two variants of the same entry:

- ``onnxruntime_onnx`` (production, NVIDIA's Triton container with GPUs): Triton's ONNX
  Runtime backend serves ``model.onnx`` itself, with dynamic batching, warm-up, GPU
  instance groups and, when the bundle allows FP16, TensorRT as the GPU accelerator.
- ``python`` (this CPU-only machine, where the only tritonserver is the one in the
  nvidia-pytriton wheel, which has the Python backend only): ``model.py`` runs the same
  ``model.onnx`` with onnxruntime inside Triton's python stub, one session per instance,
  concatenating a dynamic batch's requests into one run.

Layout: ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/<version>/model.onnx`` (+
``model.py`` for the python variant). Versions accumulate; the config keeps the latest
three loaded, so gateways mid-rollout can still ask for the version they run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from farmiq.bundle.format import Serving, TensorSpec

Variant = Literal["onnxruntime_onnx", "python"]

TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
    "string": "TYPE_STRING",
}

PYTHON_MODEL = '''"""Triton python-backend model: runs model.onnx with onnxruntime (written by farmiq)."""

import os
import sys

# The python backend's stub embeds an interpreter that ignores PYTHONPATH; the server
# helper passes the venv's site-packages here instead.
sys.path[:0] = [p for p in os.environ.get("FARMIQ_TRITON_SITE", "").split(os.pathsep) if p]

import ctypes

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# The pytriton 0.5 stub marks a DLPack capsule it consumed "used_dlpack", not the standard
# "used_dltensor", so NumPy's capsule destructor takes it for unconsumed, fails to read it
# and logs a "PyCapsule_GetPointer called with incorrect name" traceback per output per
# request. Give the consumed capsule the standard name so NumPy leaves it alone (the stub
# owns the tensor and frees it through its deleter).
_GET_NAME = ctypes.pythonapi.PyCapsule_GetName
_GET_NAME.restype, _GET_NAME.argtypes = ctypes.c_char_p, [ctypes.py_object]
_SET_NAME = ctypes.pythonapi.PyCapsule_SetName
_SET_NAME.restype, _SET_NAME.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]
_USED = b"used_dltensor"  # module-level: the capsule keeps a pointer to these bytes


def _to_triton(name, array):
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if _GET_NAME(capsule) != b"dltensor":  # consumed: never let NumPy free it again
        _SET_NAME(capsule, _USED)
    return tensor


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(os.environ.get("FARMIQ_TRITON_ORT_THREADS", "1"))
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        # One onnxruntime run for the whole dynamic batch, then split per request.
        feeds, sizes = {n: [] for n in self.inputs}, []
        for req in requests:
            for n in self.inputs:
                feeds[n].append(np.from_dlpack(pb_utils.get_input_tensor_by_name(req, n)))
            sizes.append(feeds[self.inputs[0]][-1].shape[0])
        batch = {n: (v[0] if len(v) == 1 else np.concatenate(v)) for n, v in feeds.items()}
        outs = self.session.run(self.outputs, batch)
        responses, start = [], 0
        for size in sizes:
            # DLPack both ways, not as_numpy()/Tensor(name, array): with NumPy 2 those read
            # garbage and send empty tensors in the pytriton 0.5.7 stub (measured). Hand the
            # stub a legacy "dltensor" capsule: given the array, it first asks for a capsule
            # under another name and logs a traceback per output before falling back.
            tensors = [_to_triton(n, o[start : start + size]) for n, o in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
'''


def _dims(spec: TensorSpec) -> tuple[list[int], bool]:
    """Dims without the batch axis; (dims, reshape-to-scalar) for a [batch] tensor."""
    rest = [(-1 if d is None else int(d)) for d in spec.shape[1:]]
    if not rest:
        return [1], True
    return rest, False


def _tensor_block(spec: TensorSpec) -> str:
    dims, scalar = _dims(spec)
    lines = [
        "  {",
        f'    name: "{spec.name}"',
        f"    data_type: {TRITON_DTYPES[spec.dtype]}",
        f"    dims: [ {', '.join(str(d) for d in dims)} ]",
    ]
    if scalar:
        lines.append("    reshape: { shape: [ ] }")
    lines.append("  }")
    return "\n".join(lines)


def _warmup_block(inputs: Sequence[TensorSpec]) -> str:
    parts = []
    for s in inputs:
        dims, _ = _dims(s)
        dims = [1 if d == -1 else d for d in dims]
        parts.append(
            f'      key: "{s.name}"\n      value: {{ data_type: {TRITON_DTYPES[s.dtype]} '
            f"dims: [ {', '.join(str(d) for d in dims)} ] zero_data: true }}"
        )
    body = "\n    }\n    inputs {\n".join(parts)
    return (
        'model_warmup [\n  {\n    name: "zeros"\n    batch_size: 1\n    inputs {\n'
        + body
        + "\n    }\n  }\n]"
    )


def config_pbtxt(
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    serving: Serving,
    *,
    variant: Variant = "onnxruntime_onnx",
    instance_count: int = 1,
    kind: Literal["KIND_GPU", "KIND_CPU"] | None = None,
    keep_versions: int = 3,
) -> str:
    kind = kind or ("KIND_GPU" if variant == "onnxruntime_onnx" else "KIND_CPU")
    max_batch = serving.max_batch
    preferred = sorted({b for b in (max_batch // 4, max_batch // 2, max_batch) if b >= 1})
    head = [f'name: "{name}"']
    if variant == "onnxruntime_onnx":
        head.append('platform: "onnxruntime_onnx"')
    else:
        head.append('backend: "python"')
    head.append(f"max_batch_size: {max_batch}")
    head.append(f"version_policy: {{ latest {{ num_versions: {keep_versions} }} }}")
    out = "\n".join(head) + "\n"
    out += "input [\n" + ",\n".join(_tensor_block(s) for s in inputs) + "\n]\n"
    out += "output [\n" + ",\n".join(_tensor_block(s) for s in outputs) + "\n]\n"
    out += (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {int(serving.max_delay_ms * 1000)}\n"
        "}\n"
    )
    out += f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {kind}\n  }}\n]\n"
    if variant == "onnxruntime_onnx" and kind == "KIND_GPU":
        precision = "FP16" if serving.fp16 else "FP32"
        out += (
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            f'      parameters {{ key: "precision_mode" value: "{precision}" }}\n'
            '      parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
            "    } ]\n  }\n}\n"
        )
    out += _warmup_block(inputs) + "\n"
    return out


def config_json(pbtxt: str) -> str:
    """The same model configuration as JSON (protobuf's JSON mapping of Triton's
    ``ModelConfig``): the form the repository API takes in a load request."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    msg = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=None)


def load_request_files(
    versions: dict[int, bytes], *, variant: Variant = "onnxruntime_onnx"
) -> dict[str, bytes]:
    """The model directory as repository-API ``files`` (``file:<version>/model.onnx``...)."""
    files: dict[str, bytes] = {}
    for version, model_bytes in versions.items():
        files[f"file:{int(version)}/model.onnx"] = model_bytes
        if variant == "python":
            files[f"file:{int(version)}/model.py"] = PYTHON_MODEL.encode()
    return files


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_model_entry(
    repo: Path,
    name: str,
    version: int,
    model_bytes: bytes,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    serving: Serving | None = None,
    *,
    variant: Variant = "onnxruntime_onnx",
    instance_count: int = 1,
    kind: Literal["KIND_GPU", "KIND_CPU"] | None = None,
) -> Path:
    """Write (or update) ``repo/name``; returns the model's directory."""
    serving = serving or Serving()
    model_dir = repo / name
    vdir = model_dir / str(int(version))
    vdir.mkdir(parents=True, exist_ok=True)
    _atomic_write(vdir / "model.onnx", model_bytes)
    if variant == "python":
        _atomic_write(vdir / "model.py", PYTHON_MODEL.encode())
    cfg = config_pbtxt(
        name, inputs, outputs, serving, variant=variant, instance_count=instance_count, kind=kind
    )
    _atomic_write(model_dir / "config.pbtxt", cfg.encode())
    return model_dir


def export_bundle(
    bundle: bytes,
    repo: Path,
    *,
    variant: Variant = "onnxruntime_onnx",
    instance_count: int = 1,
    kind: Literal["KIND_GPU", "KIND_CPU"] | None = None,
) -> Path:
    """Export a bundle's ONNX model to a Triton repository (reads the bundle unverified:
    verify it first with ``farmiq bundle verify`` when it comes from elsewhere)."""
    from farmiq.bundle.builder import read_container
    from farmiq.bundle.format import Manifest

    manifest_bytes, _sigs, members = read_container(bundle)
    m = Manifest.model_validate_json(manifest_bytes)
    if m.runtime != "onnxruntime":
        raise ValueError(f"only ONNX bundles can go to Triton; this one is {m.runtime}")
    name = m.serving.cloud_model or m.name
    return write_model_entry(
        repo, name, m.version, members[m.model_file], m.inputs, m.outputs, m.serving,
        variant=variant, instance_count=instance_count, kind=kind,
    )  # fmt: skip
