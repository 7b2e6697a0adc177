"""ONNX Runtime: the gateway's main local runtime.

One session per loaded model, created once and reused (recreating costs ~1.5 ms), with the
thread count set explicitly (small gateways have 2-4 cores). CUDA/TensorRT providers are
used when the host has them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort


def available_providers(prefer_gpu: bool = True, fp16: bool = False) -> list[Any]:
    """Execution providers for a new session, best first: TensorRT, CUDA, then CPU.

    ``fp16`` (from the bundle's ``serving.fp16``) lets TensorRT build FP16 engines; the
    CUDA provider runs the graph as exported (FP32 unless the model itself is FP16).
    TensorRT engines are cached next to nothing by default: set ``ORT_TENSORRT_CACHE_PATH``
    on a real GPU gateway so a restart does not rebuild them.
    """
    have = ort.get_available_providers()
    out: list[Any] = []
    if prefer_gpu and "TensorrtExecutionProvider" in have:
        opts: dict[str, Any] = {"trt_fp16_enable": bool(fp16)}
        cache = os.environ.get("ORT_TENSORRT_CACHE_PATH")
        if cache:
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache)
        out.append(("TensorrtExecutionProvider", opts))
    if prefer_gpu and "CUDAExecutionProvider" in have:
        out.append("CUDAExecutionProvider")
    out.append("CPUExecutionProvider")
    return out


class OnnxRuntime:
    kind = "onnxruntime"

    def __init__(
        self, model: bytes | str, *, intra_op_threads: int = 1, providers: list[Any] | None = None
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            model, sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        del self.session
