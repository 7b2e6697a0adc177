"""Build a served model straight from ONNX bytes, without a signed bundle.

For benchmarks, tests and in-process use of the router (``Router(ModelSet)``): the
manifest is made the way ``build_bundle`` makes it, the model is loaded and health-checked
the way the installer does it. Production gateways load models only from verified bundles.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from edge_agent.models.runtimes.onnx_runtime import OnnxRuntime, available_providers
from edge_agent.models.serving import LoadedModel, health_check
from farmiq.bundle.builder import onnx_io_specs
from farmiq.bundle.format import Manifest, MemberInfo, Serving, utcnow_iso


def loaded_model_from_onnx(
    onnx_bytes: bytes,
    *,
    name: str = "model",
    version: int = 1,
    task: str = "classification",
    labels: list[str] | None = None,
    serving: Serving | dict[str, Any] | None = None,
    intra_op_threads: int = 1,
    providers: list[Any] | None = None,
) -> LoadedModel:
    inputs, outputs = onnx_io_specs(onnx_bytes)
    manifest = Manifest(
        bundle_id=f"inproc-{hashlib.sha256(onnx_bytes).hexdigest()[:12]}-{version}",
        name=name,
        version=version,
        model_file="model/model.onnx",
        task=task,  # type: ignore[arg-type]
        labels=labels,
        inputs=inputs,
        outputs=outputs,
        members={
            "model/model.onnx": MemberInfo(
                sha256=hashlib.sha256(onnx_bytes).hexdigest(), size=len(onnx_bytes)
            )
        },
        created=utcnow_iso(),
        serving=Serving.model_validate(serving or {}),
    )
    fp16 = manifest.serving.fp16
    runtime = OnnxRuntime(
        onnx_bytes,
        intra_op_threads=intra_op_threads,
        providers=providers or available_providers(fp16=fp16),
    )
    model = LoadedModel(manifest, runtime, Path(tempfile.gettempdir()))
    health_check(model)
    return model
