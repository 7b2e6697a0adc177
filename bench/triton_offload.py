"""Offload through the router vs raw tritonclient, on a real tritonserver (the
nvidia-pytriton wheel's binary, python backend running onnxruntime), measured in the same
run, interleaved. Target: router <= 1.1x raw tritonclient latency. Then the breaker:
with the cloud breaker open, a cloud-first request falls back to the edge; the added
latency over an edge-only router must be < 1 ms.

    .venv/bin/python bench/triton_offload.py [--n 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=500)
    a = ap.parse_args()
    import tritonclient.grpc.aio as grpc_aio
    import tritonclient.http.aio as http_aio

    from control_plane.triton.publisher import TritonPublisher
    from edge_agent.inference.router import Router
    from edge_agent.inference.targets.triton_target import TritonTarget
    from edge_agent.models.model_from_bytes import loaded_model_from_onnx
    from edge_agent.models.serving import ModelSet
    from farmiq_sim.barn_model import train_barn_model
    from farmiq_sim.triton_server import TritonServer

    tm = train_barn_model(n=2000, seed=1)
    x = tm.X_test[:1].copy()
    with tempfile.TemporaryDirectory() as tmp:
        srv = TritonServer(Path(tmp) / "repo", Path(tmp) / "run")
        srv.start()
        try:
            TritonPublisher(
                srv.http_url, srv.repository, variant="python", kind="KIND_CPU"
            ).publish_bytes("barn", 1, tm.onnx_bytes)

            async def bench(proto: str) -> tuple[float, float, float, float]:
                url = srv.http_url if proto == "http" else srv.grpc_url
                mod = http_aio if proto == "http" else grpc_aio
                host = url.split("://", 1)[1]
                raw = mod.InferenceServerClient(host)
                outs = ["label", "probabilities"]

                async def raw_call() -> None:
                    t = mod.InferInput("X", list(x.shape), "FP32")
                    if proto == "http":
                        t.set_data_from_numpy(x, binary_data=True)
                        req = [mod.InferRequestedOutput(o, binary_data=True) for o in outs]
                    else:
                        t.set_data_from_numpy(x)
                        req = [mod.InferRequestedOutput(o) for o in outs]
                    r = await raw.infer("barn", [t], model_version="1", outputs=req)
                    r.as_numpy("label"), r.as_numpy("probabilities")

                ms = ModelSet()
                ms.swap(
                    loaded_model_from_onnx(
                        tm.onnx_bytes, name="barn", serving={"targets": ["cloud", "edge"]}
                    )
                )
                router = Router(ms, remotes={"cloud": TritonTarget(url)}, remote_timeout_ms=5000)
                inputs = {"X": x}
                for _ in range(50):
                    await raw_call()
                    await router.infer("barn", inputs)
                rt, ro = [], []
                for _ in range(a.n):
                    t0 = time.perf_counter()
                    await raw_call()
                    rt.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    res = await router.infer("barn", inputs)
                    ro.append(time.perf_counter() - t0)
                    assert res.target == "cloud", res.reason
                await raw.close()
                await router.close()
                return (
                    statistics.median(rt) * 1000,
                    statistics.median(ro) * 1000,
                    statistics.fmean(rt) * 1000,
                    statistics.fmean(ro) * 1000,
                )

            for proto in ("http", "grpc"):
                r50, o50, rm, om = asyncio.run(bench(proto))
                print(f"[{proto}] raw tritonclient p50 {r50:.3f} ms (mean {rm:.3f}) | router offload p50 {o50:.3f} ms "
                      f"(mean {om:.3f}) | ratio {o50 / r50:.3f}x (target <= 1.1x)")  # fmt: skip
        finally:
            srv.stop()

    # Breaker open: cloud-first model, cloud skipped at once, edge answers.
    async def breaker() -> tuple[float, float]:
        ms = ModelSet()
        ms.swap(
            loaded_model_from_onnx(
                tm.onnx_bytes, name="barn", serving={"targets": ["cloud", "edge"]}
            )
        )
        cloud_first = Router(
            ms,
            remotes={"cloud": TritonTarget("http://127.0.0.1:9")},
            breaker_failures=1,
            breaker_reset_s=3600,
        )
        cloud_first.breakers["cloud"].record_failure("bench: link down")
        ms2 = ModelSet()
        ms2.swap(loaded_model_from_onnx(tm.onnx_bytes, name="barn"))
        edge_only = Router(ms2)
        inputs = {"X": x}
        n = 20000
        best_a, best_b = 1e9, 1e9
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                res = await cloud_first.infer("barn", inputs)
            best_a = min(best_a, (time.perf_counter() - t0) / n * 1e6)
            assert res.target == "edge" and "breaker open" in res.reason
            t0 = time.perf_counter()
            for _ in range(n):
                await edge_only.infer("barn", inputs)
            best_b = min(best_b, (time.perf_counter() - t0) / n * 1e6)
        return best_a, best_b

    fb, edge = asyncio.run(breaker())
    print(f"[breaker open] fallback to edge {fb:.1f} us/request vs edge-only {edge:.1f} us: adds {fb - edge:.1f} us "
          f"(target < 1000 us)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
