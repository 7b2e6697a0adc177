"""Run the tritonserver binary shipped in the ``nvidia-pytriton`` wheel (CPU, python backend).

See ../shared/NOTES.md: PyTriton's own ``Triton()`` wrapper fails on this machine, but the
binary works with a plain model repository once the python backend stub is copied into a
backend directory of our own. The stub process imports ``model.py``, so it gets the
venv's site-packages through FARMIQ_TRITON_SITE (the stub's embedded interpreter
ignores PYTHONPATH; the exported model.py puts them on sys.path) to import onnxruntime. Production runs NVIDIA's Triton
container instead (deploy/); this helper is for tests, benchmarks and a one-box demo.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx


def pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonServer:
    def __init__(
        self,
        repository: Path,
        workdir: Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        explicit: bool = True,
        load: list[str] | None = None,
    ) -> None:
        self.repository = repository
        self.workdir = workdir
        self.http_port = http_port or _free_port()
        self.grpc_port = grpc_port or _free_port()
        self.metrics_port = metrics_port or _free_port()
        self.explicit = explicit
        self.load = load or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def backend_directory(self) -> Path:
        """The python backend (and its stub) copied where --backend-directory points."""
        return self._backends()

    def _backends(self) -> Path:
        root = pytriton_root()
        bdir = self.workdir / "backends"
        py = bdir / "python"
        if not (py / "triton_python_backend_stub").exists():
            py.mkdir(parents=True, exist_ok=True)
            for f in (root / "backends" / "python").iterdir():
                if f.is_file():
                    shutil.copy2(f, py / f.name)
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
            shutil.copy2(stub, py / "triton_python_backend_stub")
        return bdir

    def command(self) -> list[str]:
        exe = pytriton_root() / "bin" / "tritonserver"
        cmd = [
            str(exe),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends()}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--log-verbose=0",
            "--exit-timeout-secs=5",
        ]
        if self.explicit:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.load]
        return cmd

    def env(self) -> dict[str, str]:
        root = pytriton_root()
        paths = [p for p in site.getsitepackages() if "site-packages" in p]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["FARMIQ_TRITON_SITE"] = os.pathsep.join(paths)  # read by the exported model.py
        libs = [str(root.parent.parent / "nvidia_pytriton.libs"), str(root / "external_libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(
            os.pathsep
        )
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.repository.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited ({self.proc.returncode}): {self.log_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"tritonserver not ready after {timeout}s: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The python backend's stub processes are in the server's process group.
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``python -m farmiq_sim.triton_server REPO [--http-port N]``: run in the foreground."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("repository", type=Path)
    p.add_argument("--workdir", type=Path, default=Path(".farmiq/triton"))
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument(
        "--poll",
        action="store_true",
        help="load everything in the repository (no explicit control)",
    )
    a = p.parse_args(argv)
    srv = TritonServer(a.repository.resolve(), a.workdir.resolve(), http_port=a.http_port,
                       grpc_port=a.grpc_port, metrics_port=a.metrics_port, explicit=not a.poll)  # fmt: skip
    srv.start()
    print(f"tritonserver ready: {srv.http_url} {srv.grpc_url}", flush=True)
    try:
        assert srv.proc is not None
        srv.proc.wait()
    except KeyboardInterrupt:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
