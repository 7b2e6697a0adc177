"""Run a .tflite model the way TFLite Micro does on an MCU: batch 1, int8 I/O.

Float32 rows go in; each row is quantised with the input tensor's scale/zero_point when
the model takes int8, run alone (batch 1), and the output is dequantised back to float32.
Uses LiteRT (``ai_edge_litert``) and falls back to ``tflite_runtime``. Imported lazily by
the simulator only; the gateway never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the install
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    return Interpreter


class MicroModel:
    """One loaded model. Raises ValueError if ``model`` is not a usable .tflite."""

    def __init__(self, model: bytes) -> None:
        try:
            self._it = _interpreter_class()(model_content=bytes(model), num_threads=1)
            self._it.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad models
            raise ValueError(f"not a loadable .tflite model: {exc}") from exc
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ValueError("MCU models must have exactly one input and one output tensor")
        self._in, self._out = ins[0], outs[0]
        self.n_inputs = int(np.prod(self._in["shape"][1:]))
        self.n_outputs = int(np.prod(self._out["shape"][1:]))

    def run_row(self, row: np.ndarray) -> np.ndarray:
        x = np.asarray(row, dtype=np.float32).reshape(self._in["shape"])
        dtype = self._in["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            q = np.round(x / scale) + zero
            x = np.clip(q, info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self._it.set_tensor(self._in["index"], x)
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"]).reshape(-1)
        if self._out["dtype"] in (np.int8, np.uint8):
            scale, zero = self._out["quantization"]
            return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
        return y.astype(np.float32)

    def run(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.n_inputs)
        return np.stack([self.run_row(r) for r in rows])
