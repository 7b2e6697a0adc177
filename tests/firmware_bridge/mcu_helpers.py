"""Helpers shared by the firmware bridge tests (imported by name: the test dir is on sys.path)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from farmiq_sim.mcu.simulator import MCUSimulator
from firmware_bridge.messages import Reading


class Collector:
    """on_readings callback that keeps everything it was given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, device_id: str, batch: list[Reading]) -> None:
        self.readings.extend(batch)

    def keys(self) -> list[tuple[str, int, int]]:
        return [(r.device_id, r.boot_id, r.mcu_seq) for r in self.readings]


SimFactory = Callable[..., Awaitable[MCUSimulator]]


# Quantisation tolerance between two int8 runtimes of the same model: kernels may round an
# intermediate tensor differently by one step, which softmax can stretch to a few output
# steps. The fixture's output step is 1/256; measured over 2,000 rows: TFLite Micro vs
# LiteRT's builtin kernels differs on 0.25% of outputs, by at most 5 steps.
QUANT_STEPS = 8
OUTPUT_STEP = 1 / 256


def assert_within_quantization(got: np.ndarray, want: np.ndarray, exact_share: float = 0.9) -> None:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    diff = np.abs(got - want)
    assert diff.max() <= QUANT_STEPS * OUTPUT_STEP + 1e-6, (
        f"max diff {diff.max() / OUTPUT_STEP} steps"
    )
    assert (diff < 1e-6).mean() >= exact_share, f"only {(diff < 1e-6).mean():.1%} exact"


def vent_rows(n: int, seed: int = 0) -> np.ndarray:
    """Inputs of the fixture model: temperature_c, humidity_pct, nh3_ppm, co2_ppm / 1000."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.normal(22, 5, n), rng.uniform(40, 90, n), rng.gamma(2, 6, n), rng.uniform(0.5, 4, n)]
    ).astype(np.float32)


def local_litert(model: bytes, rows: np.ndarray) -> np.ndarray:
    """The host runtime: LiteRT's builtin int8 kernels (no XNNPACK delegate), batch 1,
    quantising as the tensors say."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=model,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for row in np.asarray(rows, np.float32):
        s, z = i["quantization"]
        q = np.clip(np.round(row / s) + z, -128, 127).astype(np.int8).reshape(1, -1)
        it.set_tensor(i["index"], q)
        it.invoke()
        y = it.get_tensor(o["index"]).astype(np.float32)
        s, z = o["quantization"]
        outs.append(((y - z) * s).reshape(-1))
    return np.stack(outs)
