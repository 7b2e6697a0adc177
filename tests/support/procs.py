"""Start the real parts as processes, the way they run in production.

``ControlPlaneProc`` and ``AgentProc`` run ``python -m farmiq ...`` in a subprocess with a
generated TOML config, wait until they answer, and stop them with SIGTERM (SIGKILL on
request, to test crashes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from farmiq.config import dump_toml
from farmiq_sim.net import free_port, port_open, wait_http

ENV = {
    **os.environ,
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "FEAST_USAGE": "False",
    "FARMIQ_LOG_FORMAT": "json",
}


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self.env = env or ENV
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as fh:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Mosquitto(Proc):
    """A private mosquitto with its own config (TLS, ACLs, queue limits, outages)."""

    def __init__(self, workdir: Path, extra_conf: str = "", port: int | None = None) -> None:
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / f"mosquitto-{self.port}.conf"
        body = extra_conf or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        conf.write_text(body + "\npersistence false\n")
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        super().__init__([exe, "-c", str(conf)], workdir / f"mosquitto-{self.port}.log")

    def start(self) -> None:
        super().start()
        deadline = time.time() + 10
        while not port_open("127.0.0.1", self.port):
            assert self.proc is not None
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log_text()}")
            time.sleep(0.05)


PROVISION = [sys.executable, "-m", "farmiq", "provision"]


class ControlPlaneProc(Proc):
    """Auth is on by default in the control plane. Tests that are not about auth run it
    with the explicit ``--insecure`` flag (``insecure=True``, the default here unless the
    test sets ``auth_enabled``); ``api_key()`` makes an admin key for the others."""

    def __init__(
        self, workdir: Path, mqtt_port: int, *, insecure: bool | None = None, **settings: Any
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "control-plane"
        conf = {
            "data_dir": str(self.data_dir),
            "port": self.port,
            "auth_enabled": False,  # the tests of auth turn it on; the default is on
            "mqtt": {
                "port": mqtt_port,
                "client_id": f"farmiq-cp-test-{self.port}",
                "share_group": f"farmiq-cp-test-{self.port}",
            },
            **settings,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "cp.toml").write_text(dump_toml(conf))
        self.insecure = ("auth_enabled" not in settings) if insecure is None else insecure
        args = [sys.executable, "-m", "farmiq", "control-plane", "serve"]
        args += ["-c", str(workdir / "cp.toml")] + (["--insecure"] if self.insecure else [])
        super().__init__(args, workdir / "control-plane.log")

    def api_key(self, name: str = "test-admin", role: str = "admin") -> str:
        """Create an API key with ``farmiq provision api-key`` (printed once) and return it."""
        out = subprocess.run(
            [*PROVISION, "api-key", "-c", str(self.workdir / "cp.toml"), "--name", name,
             "--role", role],
            env=self.env, capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1].split()[-1]

    def start(self, timeout: float = 120) -> None:
        super().start()
        wait_http(f"{self.url}/ready", timeout, self.proc)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def trust_root(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/api/v1/trust-root").json()  # type: ignore[no-any-return]


class AgentProc(Proc):
    def __init__(
        self,
        workdir: Path,
        device_id: str,
        mqtt_port: int,
        trust_root: dict[str, Any] | Path,
        **settings: Any,
    ) -> None:
        self.device_id = device_id
        self.mqtt_port = mqtt_port
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = workdir / "state"
        trust_path = workdir / "trust_root.json"
        if isinstance(trust_root, Path):
            shutil.copy(trust_root, trust_path)
        else:
            trust_path.write_text(json.dumps(trust_root))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = {
            "device_id": device_id,
            "state_dir": str(self.state_dir),
            "trust_root": str(trust_path),
            "mqtt": {"port": mqtt_port},
            "api": {"port": self.port},
            **settings,
        }
        self.config_path = workdir / "agent.toml"
        self.config_path.write_text(dump_toml(conf))
        super().__init__(
            [sys.executable, "-m", "farmiq", "agent", "run", "-c", str(self.config_path)],
            workdir / "agent.log",
        )

    def start(self, timeout: float = 60) -> None:
        super().start()
        wait_http(f"{self.url}/health", timeout, self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_subscribed(self, timeout: float = 20) -> None:
        """Until the agent's subscriptions are at the broker: ``/health`` answers before the
        broker link is up, and a message pushed to ``down/...`` earlier reaches no one. The
        agent subscribes, then publishes its retained state on the same connection, so
        once that state is at the broker the subscriptions are too."""
        from farmiq import topics
        from tests.support.mqtt import retained

        state = retained(self.mqtt_port, topics.up(self.device_id, topics.STATE), timeout=timeout)
        assert state is not None, f"agent {self.device_id}: no retained state after {timeout} s"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30)

    def wait_for(self, predicate: Any, timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = self.get("/api/v1/status").json()
                if predicate(last):
                    return last
            time.sleep(0.1)
        raise AssertionError(
            f"agent {self.device_id}: timed out waiting for {what}; last status {last}"
        )

    def installed_version(self, model: str) -> int | None:
        r = self.get(f"/api/v1/models/{model}")
        return r.json()["version"] if r.status_code == 200 else None
