"""The gateway's footprint: idle RSS with one model, start-to-ready, and the `edge` install.

Each figure is measured against its reference in the same run and printed with the ratio:

- idle RSS: the agent (one model installed, API up, broker connected, drift on) vs a bare
  Python process that imports onnxruntime and holds the same model's session;
- idle RSS, second reference: the same bare process that also imports the third-party
  libraries the agent runs on (asyncio and ssl, uvloop, httptools, orjson, sqlite3, paho,
  prometheus_client, pydantic with one model, psutil): the floor under the agent's figure
  before any code of its own;
- start to ready: process spawn to ``GET /ready`` = 200, vs the bare process's spawn to
  session loaded. The agent is a gateway as provisioned: the fleet's TUF root, one bundle
  installed, its signatures checked again at start (in a child process, as the daemon
  always checks them);
- one LiteRT model instead (where the interpreter is installed: ``edge-litert``): the same
  gateway serving a .tflite bundle, which never loads ONNX Runtime, vs a bare process that
  holds the same model in the LiteRT interpreter;
- install size (``--install``): a fresh venv in /tmp with ``pip install '.[edge]'``, the
  venv's size vs an empty venv's (needs PyPI; takes a minute or more). The idle RSS and
  start-up rounds then run a second time with that venv's interpreter: what a gateway
  runs, without the development environment's extra packages that libraries import
  when they find them. The LiteRT rounds run in a second fresh venv,
  ``'.[edge-core,edge-litert]'``: a LiteRT gateway without ONNX Runtime, also sized.

Targets (issue 12): idle RSS <= 80 MB, start to ready <= 1.5 s, `edge` install <= 250 MB.

    python bench/footprint.py [--install] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inference_http import prepare_agent, spawn_agent  # noqa: E402

BARE = """
import sys, time, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
print("READY", flush=True)
time.sleep(3600)
"""


BARE_LITERT = """
import sys, time
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1); it.allocate_tensors()
print("READY", flush=True)
time.sleep(3600)
"""
TFLITE = ROOT / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"


# The third-party libraries the agent runs on, and nothing of its own: what any daemon
# built on them weighs before its first line of code (the floor under the agent's figure).
LIBRARIES = """
import sys, time, asyncio, ssl, sqlite3, uvloop, httptools, orjson, psutil
import paho.mqtt.client, prometheus_client, pydantic, onnxruntime as ort
class Probe(pydantic.BaseModel):  # pydantic loads its schema machinery with a first model
    x: int
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
print("READY", flush=True)
time.sleep(3600)
"""


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def _agent_round(
    work: Path,
    model: bytes,
    reference: dict | None,
    python: str = sys.executable,
    runtime: str = "onnxruntime",
) -> tuple[float, float]:
    conf, port = prepare_agent(work, model, reference, runtime)
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = spawn_agent(work, conf, python)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError((work / "agent.log").read_text()[-2000:])
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0
        time.sleep(3.0)  # idle: background tasks settled
        return ready_s, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def _bare_round(
    model_path: Path, python: str = sys.executable, script: str = BARE
) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-c", script, str(model_path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        ready_s = time.perf_counter() - t0
        time.sleep(1.0)
        return ready_s, _rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(30)


def _du_mb(path: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 1e6


def _install(tmp: Path, extras: str) -> tuple[Path, float]:
    """A fresh venv with ``pip install '.[extras]'``: its interpreter and its size (MB)."""
    venv = tmp / extras.replace(",", "+")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", f"{ROOT}[{extras}]"],
        capture_output=True, text=True,  # pip's index warnings stay out of the report
    )  # fmt: skip
    if pip.returncode != 0:
        tail = [ln for ln in pip.stderr.splitlines() if not ln.startswith("WARNING")][-1:]
        raise SystemExit(f"footprint: pip install '.[{extras}]' failed: {''.join(tail)}")
    return venv / "bin" / "python", _du_mb(venv)


def _has_litert(python: str) -> bool:
    return subprocess.run([python, "-c", "import ai_edge_litert.interpreter"],
                          capture_output=True).returncode == 0  # fmt: skip


def _rounds(tmp: Path, rounds: int, tm: Any, python: str) -> dict[str, list[float]]:
    keys = "agent_ready agent_rss bare_ready bare_rss libs_rss"
    keys += " lite_ready lite_rss bare_lite_ready bare_lite_rss"
    out: dict[str, list[float]] = {k: [] for k in keys.split()}
    model_path = tmp / "m.onnx"
    model_path.write_bytes(tm.onnx_bytes)
    for i in range(rounds):
        work = Path(tempfile.mkdtemp(dir=tmp, prefix=f"r{i}-"))
        r, m = _agent_round(work, tm.onnx_bytes, tm.reference, python)
        out["agent_ready"].append(r)
        out["agent_rss"].append(m)
        r, m = _bare_round(model_path, python)
        out["bare_ready"].append(r)
        out["bare_rss"].append(m)
        out["libs_rss"].append(_bare_round(model_path, python, LIBRARIES)[1])
    return out


def _litert_rounds(tmp: Path, rounds: int, python: str, out: dict[str, list[float]]) -> None:
    """The same gateway serving one LiteRT model (the MCU-sized fixture), drift off (its
    reference statistics are the ONNX barn model's), vs the bare interpreter."""
    for i in range(rounds):
        work = Path(tempfile.mkdtemp(dir=tmp, prefix=f"lite{i}-"))
        r, m = _agent_round(work, TFLITE.read_bytes(), None, python, runtime="litert")
        out["lite_ready"].append(r)
        out["lite_rss"].append(m)
        r, m = _bare_round(TFLITE, python, BARE_LITERT)
        out["bare_lite_ready"].append(r)
        out["bare_lite_rss"].append(m)


def _report(label: str, res: dict[str, list[float]]) -> None:
    med = statistics.median
    print(f"{label:24}{'agent':>10}{'bare':>10}{'ratio':>8}{'target':>10}")
    ar, br = med(res["agent_rss"]), med(res["bare_rss"])
    print(f"{'idle RSS, ONNX (MB)':24}{ar:>10.1f}{br:>10.1f}{ar / br:>8.2f}{'<= 80':>10}")
    lr = med(res["libs_rss"])
    print(f"{'  its libraries alone':24}{lr:>10.1f}{'':>10}{ar / lr:>8.2f}")
    at, bt = med(res["agent_ready"]), med(res["bare_ready"])
    print(f"{'start to ready (s)':24}{at:>10.2f}{bt:>10.2f}{at / bt:>8.2f}{'<= 1.5':>10}")
    if res["lite_rss"]:
        ar, br = med(res["lite_rss"]), med(res["bare_lite_rss"])
        print(f"{'idle RSS, LiteRT (MB)':24}{ar:>10.1f}{br:>10.1f}{ar / br:>8.2f}{'<= 80':>10}")
        at, bt = med(res["lite_ready"]), med(res["bare_lite_ready"])
        print(f"{'start to ready, LiteRT':24}{at:>10.2f}{bt:>10.2f}{at / bt:>8.2f}{'<= 1.5':>10}")
    print("  bare: a Python process holding the same model in ONNX Runtime (LiteRT), nothing else")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--install", action="store_true", help="also measure the edge install")
    a = ap.parse_args()
    from farmiq_sim.barn_model import train_barn_model

    tm = train_barn_model(n=2000, seed=1)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        here = _rounds(Path(tmp), a.rounds, tm, sys.executable)
        if _has_litert(sys.executable):
            _litert_rounds(Path(tmp), a.rounds, sys.executable, here)
        if a.install:
            subprocess.run([sys.executable, "-m", "venv", f"{tmp}/empty"], check=True)
            empty_mb = _du_mb(Path(tmp) / "empty")
            python, edge = _install(Path(tmp), "edge")
            installed = _rounds(Path(tmp), a.rounds, tm, str(python))
            lite_python, lite = _install(Path(tmp), "edge-core,edge-litert")
            _litert_rounds(Path(tmp), a.rounds, str(lite_python), installed)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    _report("this environment", here)
    if a.install:
        _report("the `edge` install", installed)
        print(f"{'edge install (MB)':24}{edge:>10.1f}{empty_mb:>10.1f}{'':>8}{'<= 250':>10}")
        print(f"{'  edge-core,edge-litert':24}{lite:>10.1f}{empty_mb:>10.1f}{'':>8}{'<= 250':>10}")
        print("  bare: an empty venv; the LiteRT rounds ran in the edge-core,edge-litert venv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
