"""Fleet rollout benchmark: a 5 MB bundle to 1,000 simulated gateways, time to 100%.

Runs the real control plane (a process), a private Mosquitto tuned for many sessions
(queue limits raised at start-up: the default max_queued_messages 1000 drops QoS 1
messages for slow subscribers, see NOTES.md), and N simulated gateways in this process,
each with its own MQTT session, the agent's desired-state manager and transfer receiver,
and the real bundle verifier.

Baseline: AWS IoT Jobs roll out at most 1,000 devices per minute (its maximum
``maximumPerMinute``), so 1,000 devices take at least 60 s there. We print our time and
the ratio. A second run rolls a bundle out to a fleet where 20% of the gateways fail
their install: the rollout must stop at the canary wave.

    .venv/bin/python bench/rollout_fleet.py [--gateways 1000] [--mb 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farmiq.bundle.trust import TrustRoot
from farmiq_sim.fleet.fleet import Fleet, FleetConfig
from tests.support.procs import ENV, ControlPlaneProc, Mosquitto

AWS_IOT_JOBS_MAX_PER_MIN = 1000
MODEL = "bench-big"


def big_onnx(mb: float, seed: int) -> bytes:
    """A valid ONNX regression model whose weights weigh ``mb`` megabytes. The weights are
    a Constant node, not an initializer: MLflow moves large initializers to an external
    data file, which a model loaded from bytes cannot read."""
    from onnx import TensorProto, helper, numpy_helper

    cols = int(mb * 1024 * 1024 / 4 / 4)
    w = np.random.default_rng(seed).standard_normal((4, cols)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "wv")),
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("ReduceMean", ["h"], ["y"], keepdims=1),
        ],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(m.SerializeToString())  # type: ignore[arg-type]


def register(c: httpx.Client, data: bytes) -> int:
    meta = {"task": "regression", "feature_names": ["a", "b", "c", "d"]}
    r = c.post(
        "/api/v1/models/register",
        files={"file": ("m.onnx", data)},
        data={"name": MODEL, "meta": json.dumps(meta)},
    )
    r.raise_for_status()
    return int(r.json()["version"])


def rollout(c: httpx.Client, version: int, tag: str, waves: list[float], **kw: object) -> str:
    body = {
        "model": MODEL,
        "version": version,
        "targeting": {"tags": [tag]},
        "waves": [{"percent": p} for p in waves],
        **kw,
    }
    r = c.post("/api/v1/rollouts", json=body)
    r.raise_for_status()
    return str(r.json()["id"])


async def wait_known(c: httpx.AsyncClient, tag: str, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (await c.get("/api/v1/devices", params={"tag": tag})).json()["count"] >= n:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"only some of {n} gateways registered with the control plane")


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="farmiq-bench-rollout-"))
    broker = Mosquitto(work / "broker", extra_conf="")
    conf = (
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n"
        "max_queued_messages 100000\nmax_inflight_messages 0\nmax_connections -1\n"
    )
    broker = Mosquitto(work / "broker", extra_conf=conf, port=broker.port)
    broker.start()
    cp = ControlPlaneProc(work / "cp", broker.port)
    cp.env = {
        **ENV,
        "FARMIQ_ROLLOUT_TICK_S": "0.2",
        "FARMIQ_ROLLOUT_RESEND_S": "15",
        "FARMIQ_LOG_LEVEL": "WARNING",
    }
    cp.start()
    try:
        with cp.client() as c:
            v1 = register(c, big_onnx(0.01, 1))
            v2 = register(c, big_onnx(args.mb, 2))
            v3 = register(c, big_onnx(args.mb, 3))
            trust = TrustRoot.parse(json.dumps(c.get("/api/v1/trust-root").json()).encode())
        async with httpx.AsyncClient(base_url=cp.url, timeout=60) as ac:
            # -- 1. healthy fleet: time to 100% installed --------------------------------
            fleet = Fleet(
                FleetConfig(
                    gateways=args.gateways,
                    port=broker.port,
                    model=MODEL,
                    initial_version=v1,
                    prefix="ok",
                    tags=["ok"],
                ),
                trust,
            )
            t = time.time()
            await fleet.start()
            print(f"{fleet.online()}/{args.gateways} gateways connected in {time.time() - t:.1f}s")
            await wait_known(ac, "ok", args.gateways)
            with cp.client() as c:
                size = c.get("/api/v1/bundles", params={"model": MODEL}).json()["bundles"]
                t0 = time.time()
                rid = rollout(
                    c,
                    v2,
                    "ok",
                    [1, 10, 50, 100],
                    soak_s=args.soak,
                    rate_per_minute=100_000,
                    max_concurrent=args.concurrency,
                )
            bundle_mb = (
                next(b["size"] for b in size if b["version"] == v2) / 1e6 if size else args.mb
            )
            last = -1
            while True:
                n = fleet.versions().get(v2, 0)
                if n != last:
                    last = n
                    print(f"  [{time.time() - t0:5.1f}s] {n}/{args.gateways} installed")
                if n >= args.gateways:
                    break
                if time.time() - t0 > args.timeout:
                    raise SystemExit(f"timed out with {n}/{args.gateways} installed")
                await asyncio.sleep(0.5)
            elapsed = time.time() - t0
            status = (await ac.get(f"/api/v1/rollouts/{rid}")).json()
            aws_s = args.gateways / AWS_IOT_JOBS_MAX_PER_MIN * 60
            print(
                f"\n{bundle_mb:.1f} MB bundle to {args.gateways} gateways: "
                f"100% installed in {elapsed:.1f}s "
                f"(4 waves, soak {args.soak}s each; rollout status {status['status']})"
            )
            print(f"baseline AWS IoT Jobs at its 1,000 devices/min ceiling: {aws_s:.1f}s")
            print(
                f"ratio baseline/ours: {aws_s / elapsed:.2f}x  (target: <= 60 s -> "
                f"{'met' if elapsed <= 60 else 'NOT met'})"
            )
            await fleet.stop()

            # -- 2. 20% failing canaries: must stop at the canary wave --------------------
            bad = Fleet(
                FleetConfig(
                    gateways=args.gateways,
                    port=broker.port,
                    model=MODEL,
                    initial_version=v2,
                    prefix="bad",
                    tags=["bad"],
                    fail_rate=0.2,
                ),
                trust,
            )
            await bad.start()
            await wait_known(ac, "bad", args.gateways)
            with cp.client() as c:
                t1 = time.time()
                rid = rollout(
                    c,
                    v3,
                    "bad",
                    [5, 25, 50, 100],
                    soak_s=args.soak,
                    rate_per_minute=100_000,
                    max_concurrent=args.concurrency,
                )
            while True:
                doc = (await ac.get(f"/api/v1/rollouts/{rid}")).json()
                if doc["status"] in ("paused", "failed", "succeeded"):
                    break
                if time.time() - t1 > args.timeout:
                    raise SystemExit("failing rollout never stopped")
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # let the rollback land
            doc = (await ac.get(f"/api/v1/rollouts/{rid}")).json()
            stopped_at = doc["current_wave"]
            w0 = doc["waves"][0]["devices"]
            print(
                f"\n20% failing fleet: rollout {doc['status']} at wave {stopped_at} after "
                f"{time.time() - t1:.1f}s; canary wave devices {w0}; reason: {doc['reason']}"
            )
            print(
                f"gateways running the bad version now: {bad.versions().get(v3, 0)} "
                f"(devices beyond the canary wave touched: "
                f"{sum(sum(w['devices'].values()) for w in doc['waves'][1:])})"
            )
            ok = doc["status"] in ("paused", "failed") and stopped_at == 0
            print(f"stopped at the canary wave: {'yes' if ok else 'NO'}")
            await bad.stop()
    finally:
        cp.stop()
        broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--mb", type=float, default=5.0, help="bundle size in MB")
    p.add_argument("--soak", type=float, default=1.0, help="soak per wave, seconds")
    p.add_argument("--concurrency", type=int, default=200, help="max devices installing at once")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
