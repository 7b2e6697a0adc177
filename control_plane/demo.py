"""``farmiq demo``: the whole system on one machine, end to end, on real components.

Broker (the local Mosquitto, or one we start), the control plane (FastAPI + SQLite + MLflow
on SQLite), and a gateway agent run as separate processes, as they would in a barn and a
cloud. The demo then plays the operator over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from farmiq.config import dump_toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def start_broker(workdir: Path, embedded: bool = False) -> tuple[int, subprocess.Popen | None, str]:
    """The local Mosquitto on 1883 if it runs; else start Mosquitto on a free port; else
    (or when asked) the embedded amqtt broker. Returns (port, our process, description)."""
    if not embedded and port_open("127.0.0.1", 1883):
        return 1883, None, "mosquitto on 127.0.0.1:1883 (already running)"
    port = free_port()
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if embedded:
        exe = None
    if exe is not None:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        args, what = [exe, "-c", str(conf)], f"mosquitto on 127.0.0.1:{port} (started)"
    else:
        args = [sys.executable, "-m", "control_plane.embedded_broker", "--port", str(port)]
        what = f"embedded broker (amqtt, MQTT 3.1.1) on 127.0.0.1:{port}: install mosquitto for real use"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 15
    while not port_open("127.0.0.1", port):
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the MQTT broker did not start: {' '.join(args)}")
        time.sleep(0.05)
    return port, proc, what


class Procs:
    """The demo's child processes, stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.items: list[subprocess.Popen] = []

    def add(self, p: subprocess.Popen) -> subprocess.Popen:
        self.items.append(p)
        return p

    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        """Start ``args`` with stdout and stderr to ``logs/<log_name>``."""
        with open(self.logs / log_name, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self.add(proc)

    def stop(self) -> None:
        for p in reversed(self.items):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.items):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def run_demo(workdir: Path, keep_running: bool = False, embedded_broker: bool = False) -> int:
    import httpx
    import onnxruntime as ort

    from control_plane.barn_model import FEATURES, LABELS, train_barn_model

    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "FEAST_USAGE": "False",
    }
    procs = Procs(env, logs)
    py = sys.executable
    say = print
    try:
        t0 = time.time()
        mqtt_port, broker, broker_desc = start_broker(workdir, embedded_broker)
        if broker:
            procs.add(broker)
        say(f"[1/7] broker        {broker_desc}")
        embedded = "amqtt" in broker_desc

        cp_port = free_port()
        cp_conf = workdir / "control-plane.toml"
        cp_conf.write_text(
            dump_toml(
                {
                    "data_dir": str(workdir / "control-plane"),
                    "host": "127.0.0.1",
                    "port": cp_port,
                    "mqtt": {
                        "port": mqtt_port,
                        "client_id": f"farmiq-cp-demo-{cp_port}",
                        "share_group": f"farmiq-demo-{cp_port}",
                        "shared_subscription": not embedded,
                    },
                }
            )
        )
        cp = procs.spawn(
            [py, "-m", "farmiq", "control-plane", "serve", "-c", str(cp_conf), "--insecure"],
            "control-plane.log",
        )
        api = f"http://127.0.0.1:{cp_port}"
        wait_http(f"{api}/ready", 120, cp)
        say(f"[2/7] control plane {api} (SQLite, MLflow registry on SQLite)")

        trust = httpx.get(f"{api}/api/v1/trust-root").json()
        agent_dir = workdir / "gateway"
        agent_dir.mkdir()
        (agent_dir / "trust_root.json").write_text(json.dumps(trust))
        agent_port = free_port()
        device = "barn-01"
        (agent_dir / "agent.toml").write_text(
            dump_toml(
                {
                    "device_id": device,
                    "farm_id": "demo-farm",
                    "state_dir": str(agent_dir / "state"),
                    "trust_root": str(agent_dir / "trust_root.json"),
                    "mqtt": {"port": mqtt_port},
                    "api": {"port": agent_port},
                }
            )
        )
        agent = procs.spawn(
            [py, "-m", "farmiq", "agent", "run", "-c", str(agent_dir / "agent.toml")], "agent.log"
        )
        agent_url = f"http://127.0.0.1:{agent_port}"
        wait_http(f"{agent_url}/health", 60, agent)
        say(f"[3/7] gateway agent {device} at {agent_url} (no model yet)")

        trained = train_barn_model()
        say(
            f"[4/7] trained       barn ventilation model (scikit-learn -> ONNX, "
            f"{len(trained.onnx_bytes)} bytes, accuracy {trained.accuracy:.2f})"
        )

        meta = {"task": "classification", "labels": LABELS, "feature_names": FEATURES}
        r = httpx.post(
            f"{api}/api/v1/models/register",
            files={
                "file": ("model.onnx", trained.onnx_bytes),
                "reference": ("reference.json", json.dumps(trained.reference)),
            },
            data={"name": "barn-ventilation", "meta": json.dumps(meta)},
            timeout=120,
        )
        r.raise_for_status()
        version = r.json()["version"]
        httpx.put(
            f"{api}/api/v1/models/barn-ventilation/promote", json={"version": version}, timeout=60
        ).raise_for_status()
        say(
            f"[5/7] registry      barn-ventilation v{version} registered in MLflow and promoted to @production"
        )

        r = httpx.post(
            f"{api}/api/v1/deployments",
            json={"model": "barn-ventilation", "devices": [device]},
            timeout=120,
        )
        r.raise_for_status()
        dep = r.json()
        deadline = time.time() + 60
        status = "sent"
        while time.time() < deadline:
            status = httpx.get(f"{api}/api/v1/deployments/{dep['id']}").json()["devices"][device][
                "status"
            ]
            if status != "sent":
                break
            time.sleep(0.2)
        if status != "installed":
            say(f"rollout failed: device says {status}")
            return 1
        say(
            f"[6/7] rollout       bundle {dep['bundle_id'][:8]} signed, sent over MQTT, "
            f"verified and installed on {device}"
        )

        sess = ort.InferenceSession(trained.onnx_bytes, providers=["CPUExecutionProvider"])
        rows = trained.X_test[:5]
        resp = httpx.post(
            f"{agent_url}/api/v1/inference",
            json={"model": "barn-ventilation", "inputs": rows.tolist()},
        ).json()
        local = sess.run(None, {sess.get_inputs()[0].name: rows})
        agree = np.array_equal(np.asarray(resp["outputs"]["label"]), local[0])
        preds = [LABELS[i] for i in resp["outputs"]["label"]]
        say(
            f"[7/7] inference     5 barns -> {preds}; served by {resp['target']} "
            f"v{resp['version']} in {resp['latency_ms']:.3f} ms; "
            f"{'equals' if agree else 'DIFFERS FROM'} onnxruntime"
        )
        say(f"done in {time.time() - t0:.1f}s. Logs: {logs}")
        if not agree:
            return 1
        if keep_running:
            ml_port = free_port()
            mlflow_db = workdir / "control-plane" / "mlflow.db"
            procs.spawn(
                [py, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_db}",
                 "--host", "127.0.0.1", "--port", str(ml_port)],
                "mlflow.log",
            )  # fmt: skip
            say(f"operator API  {api}/docs")
            say(f"dashboard     {api}/dashboard")
            say(f"MLflow UI     http://127.0.0.1:{ml_port}")
            say(f"gateway API   {agent_url}/api/v1/models")
            say("Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    finally:
        procs.stop()
