"""Shared bits of the inference benchmarks (not a benchmark itself)."""

from __future__ import annotations

import statistics
from typing import Any


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary_ms(values_s: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values_s]
    return {"p50_ms": round(pct(ms, 0.5), 4), "p99_ms": round(pct(ms, 0.99), 4),
            "mean_ms": round(statistics.fmean(ms), 4)}  # fmt: skip


def mlp_onnx(d_in: int = 256, hidden: int = 1024, d_out: int = 10, seed: int = 0) -> bytes:
    """An ONNX MLP with large Gemms (weights ~5 MB): big enough for batching to matter."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name
        )

    inits = [w("W1", (d_in, hidden)), w("b1", (hidden,)), w("W2", (hidden, hidden)), w("b2", (hidden,)),
             w("W3", (hidden, d_out)), w("b3", (d_out,))]  # fmt: skip
    nodes = [
        helper.make_node("Gemm", ["X", "W1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "W2", "b2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "W3", "b3"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, d_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, d_out])],
        initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
