"""Loaded models and the local inference call.

``ModelSet`` maps a model name to its ``LoadedModel``. A swap replaces the dict entry in
one assignment; a request already running holds its own reference to the old model, so a
bundle swap never drops in-flight requests.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.models.runtimes.base import Runtime
from farmiq.bundle.format import Manifest


@dataclass
class LoadedModel:
    manifest: Manifest
    runtime: Runtime
    path: Path
    loaded_at: float = field(default_factory=time.time)
    warm: bool = False

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        std = self.manifest.preprocessing.get("standardize")
        if not std:
            return inputs
        name = self.manifest.inputs[0].name
        mean = np.asarray(std["mean"], dtype=np.float32)
        scale = np.asarray(std["std"], dtype=np.float32)
        out = dict(inputs)
        out[name] = ((inputs[name] - mean) / scale).astype(np.float32)
        return out

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runtime.run(self.preprocess(inputs))


PROBABILITY_NAMES = ("probabilities", "probability", "probs", "output_probability")


def probability_output(manifest: Manifest) -> str | None:
    """The output holding class probabilities: by name, else the last 2-D float output."""
    outs = manifest.outputs
    for o in outs:
        if o.name.lower() in PROBABILITY_NAMES:
            return o.name
    floats = [o for o in outs if o.dtype.startswith("float") and len(o.shape) == 2]
    return floats[-1].name if floats else None


# The modules each bundle runtime loads, and the extra that installs them. A gateway may
# carry only one runtime: `edge` has ONNX Runtime; `edge-core` + `edge-litert` only LiteRT.
_LITERT = (("ai_edge_litert", "tflite_runtime"), "edge-litert")  # as litert_runtime.py tries them
RUNTIME_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "onnxruntime": (("onnxruntime",), "edge"),
    "litert": _LITERT,
    "mcu-tflite": _LITERT,  # served on the MCU, loaded on the host too (load_runtime)
}


def missing_runtime(manifest: Manifest) -> str | None:
    """Why this gateway cannot run the bundle's runtime, found without importing it (an
    installer check: the bundle is refused as ``incompatible`` before it is staged)."""
    modules, extra = RUNTIME_PACKAGES[manifest.runtime]
    if any(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return (
        f"{manifest.runtime} bundles need {modules[0]} on the gateway, which does not have it: "
        f"pip install 'farmiq-edge[{extra}]'"
    )


def load_runtime(manifest: Manifest, model_path: Path, intra_op_threads: int = 1) -> Runtime:
    if manifest.runtime == "onnxruntime":
        from edge_agent.models.runtimes.onnx_runtime import OnnxRuntime, available_providers

        return OnnxRuntime(
            str(model_path),
            intra_op_threads=intra_op_threads,
            providers=available_providers(fp16=manifest.serving.fp16),
        )
    if manifest.runtime in ("litert", "mcu-tflite"):
        from edge_agent.models.runtimes.litert_runtime import LiteRtRuntime

        return LiteRtRuntime(
            str(model_path),
            num_threads=intra_op_threads,
            input_names=[i.name for i in manifest.inputs],
            output_names=[o.name for o in manifest.outputs],
        )
    raise ValueError(f"unsupported runtime {manifest.runtime!r}")


def warmup_inputs(manifest: Manifest, rows: int = 1) -> dict[str, np.ndarray]:
    """Zero inputs of the declared shapes (dynamic axes set to ``rows``)."""
    out = {}
    for spec in manifest.inputs:
        shape = [rows if d is None else d for d in spec.shape]
        out[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return out


def health_check(model: LoadedModel, runs: int = 3) -> None:
    """Warm the model up and check it answers with finite outputs of the declared names."""
    for rows in (1,) * runs:
        outs = model.run(warmup_inputs(model.manifest, rows))
        for spec in model.manifest.outputs:
            if spec.name not in outs:
                raise RuntimeError(f"model produced no output {spec.name!r}")
            arr = np.asarray(outs[spec.name])
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise RuntimeError(f"output {spec.name!r} is not finite on warm-up input")
    model.warm = True


def load_checked(manifest: Manifest, directory: Path, intra_op_threads: int = 1) -> LoadedModel:
    """The one load-and-health-check: the model file of ``manifest`` under ``directory``,
    warmed up and checked (installs, start-up, rollbacks, shadow candidates)."""
    runtime = load_runtime(manifest, directory / manifest.model_file, intra_op_threads)
    model = LoadedModel(manifest, runtime, directory)
    health_check(model)
    return model


class ModelSet:
    def __init__(self) -> None:
        self._models: dict[str, LoadedModel] = {}

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` (one dict assignment). Announced by ``InstallService`` through
        ``ModelEvents`` on the event loop, not here (this runs in a worker thread)."""
        old = self._models.get(model.name)
        self._models[model.name] = model
        return old

    def remove(self, name: str) -> LoadedModel | None:
        return self._models.pop(name, None)

    def all(self) -> list[LoadedModel]:
        return list(self._models.values())

    def __len__(self) -> int:
        return len(self._models)
