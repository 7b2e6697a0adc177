"""Micro-batching on a model big enough for it to matter (an ONNX MLP, 256 -> 1024 ->
1024 -> 10, ~5 MB of weights): throughput of 64 concurrent callers sending one row each
through the router, batched (serving.max_batch=64, max_delay_ms=2) vs unbatched
(max_batch=1: the same worker thread, one row per run). Target: batched >= 3x.

    .venv/bin/python bench/micro_batching.py [--seconds 5] [--callers 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.inference_common import cuda_available, mlp_onnx, pct


def measure(
    model_bytes: bytes, max_batch: int, callers: int, seconds: float, providers: list[str]
) -> dict[str, float]:
    from edge_agent.inference.router import Router
    from edge_agent.models.model_from_bytes import loaded_model_from_onnx
    from edge_agent.models.serving import ModelSet

    m = loaded_model_from_onnx(model_bytes, name="mlp", task="classification",
                               serving={"max_batch": max_batch, "max_delay_ms": 2}, providers=providers)  # fmt: skip
    ms = ModelSet()
    ms.swap(m)
    router = Router(ms, inline_max_us=0)  # this model is batched on any machine
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((callers, 256)).astype(np.float32)
    lat: list[float] = []

    async def caller(i: int, stop: float) -> int:
        n = 0
        x = {"X": rows[i : i + 1]}
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await router.infer("mlp", x, use_cache=False)
            lat.append(time.perf_counter() - t0)
            n += 1
        return n

    async def run() -> tuple[int, float]:
        await router.infer("mlp", {"X": rows[:1]})
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(caller(i, t0 + seconds) for i in range(callers)))
        el = time.perf_counter() - t0
        await router.close()
        return sum(counts), el

    n, el = asyncio.run(run())
    st = router.snapshot()["models"]["mlp"].get("batching", {})
    return {"rps": n / el, "p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000,
            "mean_batch": st.get("mean_batch") or 1.0}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--callers", type=int, default=64)
    a = ap.parse_args()
    model = mlp_onnx()
    paths = [("CPU", ["CPUExecutionProvider"])]
    if cuda_available():
        paths.append(("CUDA", ["CUDAExecutionProvider", "CPUExecutionProvider"]))
    for label, prov in paths:
        un = measure(model, 1, a.callers, a.seconds, prov)
        ba = measure(model, 64, a.callers, a.seconds, prov)
        for name, r in (("unbatched (max_batch=1)", un), ("micro-batched (max_batch=64)", ba)):
            print(f"[{label}] {name:30s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                  f"p99 {r['p99_ms']:7.2f} ms  mean batch {r['mean_batch']}")  # fmt: skip
        print(
            f"[{label}] batched / unbatched throughput at {a.callers} callers: "
            f"{ba['rps'] / un['rps']:.2f}x (target >= 3x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
