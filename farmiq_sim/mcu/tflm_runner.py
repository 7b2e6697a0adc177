"""Run a .tflite model with the TFLite Micro interpreter, the way the MCU does.

The ``tflite-micro`` package is TFLite Micro itself (its C++ interpreter with a Python
wrapper), so op support and the tensor arena are TFLite Micro's: a model with an op TFLM
lacks, or one that needs more arena than the simulated MCU has, fails here as it would on
the chip. Float32 rows go in; each row is quantised with the input tensor's scale/zero
point when the model takes int8, run alone (batch 1), and the output is dequantised back
to float32. Imported lazily by the simulator when a model arrives; a gateway never needs it.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np


def _runtime() -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError(
            "the MCU simulator needs the tflite-micro package to run models "
            "(pip install 'farmiq-edge[sim]')"
        ) from exc
    return runtime


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    """TFLM prints allocation failures on fd 2; the caller reports them in one line."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def arena_needed(model: bytes, limit: int = 1 << 20) -> int:
    """The smallest arena (to 64 bytes) TFLite Micro can run ``model`` in (tests, bench)."""
    lo, hi = 0, limit
    if not _fits(model, hi):
        raise ValueError(f"model does not fit a {limit}-byte arena")
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if _fits(model, mid):
            hi = mid
        else:
            lo = mid
    return hi


def _fits(model: bytes, arena: int) -> bool:
    try:
        MicroModel(model, arena)
    except ValueError:
        return False
    return True


class MicroModel:
    """One model in a TFLM interpreter with ``arena_size`` bytes of arena.

    Raises ValueError if ``model`` is not a model TFLM can prepare in that arena.
    """

    def __init__(self, model: bytes, arena_size: int) -> None:
        runtime = _runtime()
        try:
            with _quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
                self._it = runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_size)
        except Exception as exc:  # TFLM raises RuntimeError/ValueError for bad models
            raise ValueError(
                f"TFLite Micro cannot prepare the model in a {arena_size}-byte arena: {exc}"
            ) from exc
        self._in = self._it.get_input_details(0)
        self._out = self._it.get_output_details(0)
        self.n_inputs = int(np.prod(self._in["shape"][1:]))
        self.n_outputs = int(np.prod(self._out["shape"][1:]))

    @staticmethod
    def _qparams(details: dict[str, Any]) -> tuple[float, int]:
        q = details.get("quantization_parameters") or {}
        scales, zeros = q.get("scales"), q.get("zero_points")
        if scales is None or zeros is None or len(scales) == 0:
            return 0.0, 0
        return float(scales[0]), int(zeros[0])

    def run_row(self, row: np.ndarray) -> np.ndarray:
        x = np.asarray(row, dtype=np.float32).reshape(self._in["shape"])
        dtype = np.dtype(self._in["dtype"])
        if dtype in (np.int8, np.uint8):
            scale, zero = self._qparams(self._in)
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self._it.set_input(x, 0)
        self._it.invoke()
        y = np.asarray(self._it.get_output(0)).reshape(-1)
        if np.dtype(self._out["dtype"]) in (np.int8, np.uint8):
            scale, zero = self._qparams(self._out)
            return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
        return y.astype(np.float32)

    def run(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.n_inputs)
        return np.stack([self.run_row(r) for r in rows])
