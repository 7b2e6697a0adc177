"""LiteRT (TFLite) runtime through ``ai_edge_litert``, or ``tflite_runtime`` where that is
what the gateway has (it fails beside NumPy 2, see NOTES)."""

from __future__ import annotations

import numpy as np

from edge_agent.models.runtimes.base import RuntimeUnavailable


def _interpreter_class():  # type: ignore[no-untyped-def]
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

            return Interpreter
        except ImportError as exc:
            raise RuntimeUnavailable(
                "LiteRT bundles need the LiteRT interpreter on the gateway: "
                "pip install 'farmiq-edge[edge-litert]'"
            ) from exc


class LiteRtRuntime:
    kind = "litert"

    def __init__(
        self,
        model_path: str,
        *,
        num_threads: int = 1,
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
    ) -> None:
        self.interpreter = _interpreter_class()(model_path=model_path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self._inputs = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        # Converters name tensors "serving_default_x:0"; the bundle's manifest names them by
        # position, and those are the names requests and answers use.
        self.input_names = input_names or [d["name"] for d in self._inputs]
        self.output_names = output_names or [d["name"] for d in self._outputs]
        if len(self.input_names) != len(self._inputs) or len(self.output_names) != len(
            self._outputs
        ):
            raise ValueError("the manifest's inputs/outputs do not match the model's tensors")

    @staticmethod
    def _quantize(arr: np.ndarray, detail: dict) -> np.ndarray:
        scale, zero = detail.get("quantization", (0.0, 0))
        dtype = detail["dtype"]
        if scale and np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            q = np.round(arr / scale + zero)
            return np.clip(q, info.min, info.max).astype(dtype)
        return arr.astype(dtype)

    @staticmethod
    def _dequantize(arr: np.ndarray, detail: dict) -> np.ndarray:
        scale, zero = detail.get("quantization", (0.0, 0))
        if scale and np.issubdtype(arr.dtype, np.integer):
            return ((arr.astype(np.float32) - zero) * scale).astype(np.float32)
        return arr

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # TFLite models have a fixed batch axis: run row by row when given a batch.
        first = self._inputs[0]
        batch = next(iter(inputs.values())).shape[0]
        fixed = int(first["shape"][0]) if len(first["shape"]) else 1
        if batch != fixed and fixed == 1:
            rows = [self.run({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(batch)]
            return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        for name, detail in zip(self.input_names, self._inputs, strict=True):
            arr = inputs.get(name)
            if arr is None:
                raise ValueError(f"missing input {name}")
            self.interpreter.set_tensor(detail["index"], self._quantize(arr, detail))
        self.interpreter.invoke()
        return {
            name: self._dequantize(self.interpreter.get_tensor(d["index"]), d)
            for name, d in zip(self.output_names, self._outputs, strict=True)
        }

    def close(self) -> None:
        del self.interpreter
