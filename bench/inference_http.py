"""The agent's local HTTP inference API under load, beside two references measured in the
same run on the same machine:

1. the agent (real ``farmiq agent run`` process: LocalApi on the agent's HTTP server,
   edge_agent/api/http_server.py, httptools + uvloop; the router, the tiny barn model
   inline; result cache OFF so every request runs it),
2. an empty endpoint of the same server stack (LocalApi, one constant answer),
3. a bare ASGI app on uvicorn (httptools, uvloop, orjson) that parses the JSON, calls
   ``session.run`` and answers, nothing else: the reference of issue 12's target,
4. the same bare handler on the agent's server stack: what the agent's routing,
   validation, metrics and drift cost on top of the server it runs.

Load: ``wrk`` (apt-get install wrk), 16 connections, 2 threads, on the same 2 cores.
Targets: >= 8,000 req/s with p99 <= 5 ms (ours); the specification's: p50 < 10 ms,
p95 < 50 ms, p99 < 100 ms, > 1,000 req/s.

    .venv/bin/python bench/inference_http.py [--duration 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farmiq_sim.net import free_port, wait_http  # noqa: E402

MODEL = "barn-ventilation"
AGENT = "agent API (router, inline, drift on)"
EMPTY = "empty endpoint, same stack (LocalApi)"
BARE = "bare ASGI + orjson + session.run"
BARE_SAME = "bare orjson + session.run, same stack"

EMPTY_APP = textwrap.dedent("""
    import asyncio, sys, uvloop
    from edge_agent.api.local_api import LocalApi, Response
    from edge_agent.api.http_server import HttpServer
    api = LocalApi()
    BODY = b'{"ok":true}'
    if len(sys.argv) > 2:  # the bare handler on this stack
        import orjson, numpy as np, onnxruntime as ort
        opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(sys.argv[2], sess_options=opts, providers=["CPUExecutionProvider"])
        OPT = orjson.OPT_SERIALIZE_NUMPY
        @api.route("POST", "/api/v1/inference")
        async def bare(req):
            r = orjson.loads(req.body)
            label, proba = sess.run(None, {"X": np.asarray(r["inputs"], dtype=np.float32)})
            return Response(orjson.dumps({"outputs": {"label": label, "probabilities": proba}}, option=OPT))
    else:
        @api.route("POST", "/api/v1/inference")
        async def empty(req):
            return Response(BODY)
    @api.route("GET", "/health")
    async def health(req):
        return Response(BODY)
    async def main():
        server = HttpServer(api, "127.0.0.1", int(sys.argv[1]))
        await server.start()
        await asyncio.Event().wait()
    uvloop.run(main())
""")

BARE_APP = textwrap.dedent("""
    import sys, orjson, uvicorn, uvloop, numpy as np, onnxruntime as ort
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(sys.argv[2], sess_options=opts, providers=["CPUExecutionProvider"])
    OPT = orjson.OPT_SERIALIZE_NUMPY
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            m = await receive(); body += m.get("body", b""); more = m.get("more_body", False)
        if scope["path"] == "/health":
            out = b"{}"
        else:
            req = orjson.loads(body)
            label, proba = sess.run(None, {"X": np.asarray(req["inputs"], dtype=np.float32)})
            out = orjson.dumps({"outputs": {"label": label, "probabilities": proba}}, option=OPT)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})
    cfg = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), loop="none", http="httptools",
                         lifespan="off", access_log=False, log_level="warning")
    uvloop.run(uvicorn.Server(cfg).serve())
""")


# wrk's own summary prints 50/75/90/99 only: the done() hook prints exact percentiles (us)
# of every request, p95 included, in a line that is easy to find.
_DONE_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("PCTL %d %d %d %d %d %d\\n", latency:percentile(50),
    latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


def _wrk(url: str, body: bytes, seconds: int, conns: int, workdir: Path) -> dict[str, float]:
    lua = workdir / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n" + _DONE_LUA
    )
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pct = re.search(r"^PCTL (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    p50, p90, p95, p99, p999, mx = (
        (int(v) / 1000 for v in pct.groups()) if pct else [float("nan")] * 6
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {"rps": rps, "p50": p50, "p90": p90, "p95": p95, "p99": p99, "p999": p999, "max": mx,
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "errors": 1.0 if errors else 0.0}  # fmt: skip


def _start_agent(
    work: Path, model_bytes: bytes, reference: dict | None = None, python: str = sys.executable
) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``farmiq agent run`` with one signed bundle installed. ``python``: another
    environment's interpreter (bench/footprint.py's fresh `edge` install), run from the
    work folder so that it imports its own installed package, not this checkout."""
    conf, port = prepare_agent(work, model_bytes, reference)
    return spawn_agent(work, conf, python), f"http://127.0.0.1:{port}"


def prepare_agent(
    work: Path, model_bytes: bytes, reference: dict | None = None, runtime: str = "onnxruntime"
) -> tuple[Path, int]:
    """A gateway's files in ``work``: the fleet's TUF root, one signed bundle installed,
    the agent config. Returns (config path, API port). ``runtime="litert"``: a .tflite
    model, its outputs as the model names them (no labels)."""
    from edge_agent.models.installer import Installer
    from edge_agent.models.model_store import ModelStore
    from edge_agent.models.serving import ModelSet
    from farmiq.bundle.builder import build_bundle
    from farmiq.bundle.signing import Signer
    from farmiq.bundle.trust import TrustRoot
    from farmiq.config import dump_toml
    from provisioning.fleet import init_fleet

    # the fleet's TUF root, as `farmiq provision init-fleet` makes it for real gateways
    fleet = init_fleet(work / "fleet")
    signer = Signer.load(fleet.targets_keys()[0])
    trust = fleet.root_json
    state = work / "state"
    bundle = build_bundle(
        model_bytes, name=MODEL, version=1, signers=[signer], runtime=runtime,
        labels=["off", "low", "high"] if runtime == "onnxruntime" else None,
        reference=reference,  # drift statistics on, as the control plane's bundles have them
    )  # fmt: skip
    inst = Installer(ModelStore(state), ModelSet(), TrustRoot.load(trust), device_id="bench-gw",
                     hardware_class="generic-linux", max_bundle_bytes=64 << 20)  # fmt: skip
    assert inst.install(bundle).ok
    port = free_port()
    conf = work / "agent.toml"
    conf.write_text(dump_toml({
        "device_id": "bench-gw", "state_dir": str(state), "trust_root": str(trust),
        "api": {"port": port}, "inference": {"cache_size": 0},
        "mqtt": {"port": int(os.environ.get("FARMIQ_BENCH_MQTT_PORT", "1883"))},
    }))  # fmt: skip
    return conf, port


def spawn_agent(work: Path, conf: Path, python: str = sys.executable) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FARMIQ_LOG_LEVEL": "WARNING"}
    with open(work / "agent.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([python, "-m", "farmiq", "agent", "run", "-c", str(conf)],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=None if python == sys.executable else work)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of (agent, empty, bare) back to back; medians are reported",
    )  # fmt: skip
    a = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    from farmiq_sim.barn_model import train_barn_model

    tm = train_barn_model(n=2000, seed=1)
    body = (b'{"model":"' + MODEL.encode() + b'","inputs":[' +
            ",".join(str(v) for v in tm.X_test[0].tolist()).encode().join([b"[", b"]"]) + b"]}")  # fmt: skip
    names = [AGENT, EMPTY, BARE, BARE_SAME]
    rounds: list[dict[str, dict[str, float]]] = []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "m.onnx").write_bytes(tm.onnx_bytes)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            agent, agent_url = _start_agent(work, tm.onnx_bytes, tm.reference)
            procs.append(agent)
            ep, bp, sp = free_port(), free_port(), free_port()
            onnx = str(work / "m.onnx")
            empty = subprocess.Popen([sys.executable, "-c", EMPTY_APP, str(ep)], cwd=ROOT)
            bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(bp), onnx], cwd=ROOT)
            same = subprocess.Popen([sys.executable, "-c", EMPTY_APP, str(sp), onnx], cwd=ROOT)
            procs += [empty, bare, same]
            urls = {
                AGENT: agent_url,
                EMPTY: f"http://127.0.0.1:{ep}",
                BARE: f"http://127.0.0.1:{bp}",
                BARE_SAME: f"http://127.0.0.1:{sp}",
            }
            for url, proc in zip(urls.values(), procs, strict=True):
                wait_http(f"{url}/health", 60, proc)
                _wrk(url + "/api/v1/inference", body, 2, a.connections, work)  # warm
            # Interleaved rounds: a burst of load from other work on the machine hits one
            # round of all three, not all rounds of one server.
            for _ in range(a.rounds):
                rnd = {}
                for name in names:
                    rnd[name] = _wrk(
                        urls[name] + "/api/v1/inference", body, a.duration, a.connections, work
                    )
                    time.sleep(0.3)
                rounds.append(rnd)
                load.append(os.getloadavg()[0])
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    print(f"wrk -t2 -c{a.connections} -d{a.duration}s x {a.rounds} rounds, POST one row, "
          f"{os.cpu_count()} cores, load generator and servers on one machine; "
          f"1-min load average {' -> '.join(f'{v:.2f}' for v in load)}")  # fmt: skip
    cols = ("rps", "p50", "p90", "p95", "p99", "p999", "max")
    head = f"{'server':40s} {'req/s':>8s} " + " ".join(f"{c + ' ms':>8s}" for c in cols[1:])
    for i, rnd in enumerate(rounds, 1):
        print(f"round {i}\n{head}")
        for name in names:
            r = rnd[name]
            print(f"{name:40s} {r['rps']:8.0f} " + " ".join(f"{r[c]:8.2f}" for c in cols[1:])
                  + ("  (non-2xx or socket errors!)" if r["non2xx"] or r["errors"] else ""))  # fmt: skip
    med = {n: {c: statistics.median(r[n][c] for r in rounds) for c in cols} for n in names}
    print(f"median of {len(rounds)} rounds\n{head}")
    for name in names:
        print(
            f"{name:40s} {med[name]['rps']:8.0f} "
            + " ".join(f"{med[name][c]:8.2f}" for c in cols[1:])
        )
    ours, bare_r, empty_r, same_r = med[AGENT], med[BARE], med[EMPTY], med[BARE_SAME]
    print(f"agent / bare reference (uvicorn): throughput {ours['rps'] / bare_r['rps']:.2f}x "
          f"(target >= 0.9x), p99 {ours['p99'] / bare_r['p99']:.2f}x; agent / bare handler on "
          f"the same stack: throughput {ours['rps'] / same_r['rps']:.2f}x; agent / empty "
          f"endpoint: {ours['rps'] / empty_r['rps']:.2f}x")  # fmt: skip
    checks = [
        ("throughput", "req/s", ours["rps"], ">=", 8000, ">", 1000),
        ("p50 latency", "ms", ours["p50"], None, None, "<", 10),
        ("p95 latency", "ms", ours["p95"], None, None, "<", 50),
        ("p99 latency", "ms", ours["p99"], "<=", 5, "<", 100),
    ]
    print(f"{'agent (median)':16s} {'measured':>12s}   {'our target':16s} {'specification':16s}")
    for label, unit, v, op, target, sop, spec in checks:
        ours_s = f"{op} {target:,} {_verdict(v, op, target)}" if op else "-"
        print(f"{label:16s} {v:>9,.2f} {unit:5s} {ours_s:16s} "
              f"{sop} {spec:,} {_verdict(v, sop, spec)}")  # fmt: skip
    return 0


def _verdict(v: float, op: str | None, target: float | None) -> str:
    ok = {">=": v >= (target or 0), ">": v > (target or 0), "<=": v <= (target or 0),
          "<": v < (target or 0)}[op or ">="]  # fmt: skip
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    raise SystemExit(main())
