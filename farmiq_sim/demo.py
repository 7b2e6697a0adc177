"""``farmiq demo``: the whole system on one machine, end to end, on real components.

Each run gets a folder of its own and a broker of its own on a free port, so two demos on
one machine never share state, gateway names or a broker. As in production:

* the broker is Mosquitto with mutual TLS and per-gateway ACLs, configured from a fleet
  made by ``provisioning`` (PKI, ``mosquitto-config``); the gateway enrolls with a one-time
  token and gets its certificate from the fleet CA. Only where Mosquitto is missing (or
  ``--embedded-broker`` asks) the embedded amqtt broker runs instead, anonymous, with a
  warning;
* the operator API has authentication on; the demo creates an admin API key through
  ``farmiq provision api-key`` and prints it. ``--insecure`` turns authentication off,
  with a warning.

The control plane (FastAPI + SQLite + MLflow on SQLite) and the gateway agent run as
separate processes, as they would in a cloud and a barn; the demo plays the operator over
HTTP.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from farmiq.config import dump_toml
from farmiq_sim.net import free_port, port_open, wait_http

DEFAULT_BASE = Path(".farmiq/demo")


class DemoError(RuntimeError):
    """A set-up problem the demo reports in one line."""


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen | None
    description: str
    tls: bool
    embedded: bool
    fleet_dir: Path | None = None


def _mosquitto() -> str | None:
    exe = shutil.which("mosquitto")
    if exe is None and Path("/usr/sbin/mosquitto").exists():
        exe = "/usr/sbin/mosquitto"
    return exe


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while not port_open("127.0.0.1", port):
        if time.time() > deadline or proc.poll() is not None:
            raise DemoError(f"{what} did not start (see its log)")
        time.sleep(0.05)


def start_broker(workdir: Path, logs: Path, embedded: bool = False) -> Broker:
    """A broker of the demo's own on a free port: Mosquitto with mutual TLS and per-gateway
    ACLs from a fresh fleet (as production); the embedded amqtt broker when Mosquitto is
    missing or ``embedded`` asks for it."""
    port = free_port()
    exe = None if embedded else _mosquitto()
    if exe is None:
        args = [sys.executable, "-m", "farmiq_sim.embedded_broker", "--port", str(port)]
        with open(logs / "broker.log", "wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_port(port, proc, "the embedded MQTT broker")
        why = "as asked" if embedded else "Mosquitto is not installed"
        return Broker(
            port,
            proc,
            f"embedded broker (amqtt, MQTT 3.1.1, anonymous, no TLS: {why}) on 127.0.0.1:{port}",
            tls=False,
            embedded=True,
        )
    from provisioning.fleet import init_fleet
    from provisioning.mosquitto_config import write_mosquitto_config

    fleet = init_fleet(
        workdir / "fleet",
        root_threshold=1,
        root_keys=1,
        broker_hosts=("127.0.0.1", "localhost"),
        fleet_name="farmiq-demo",
    )
    user = "root" if os.geteuid() == 0 else None  # mosquitto drops to `mosquitto` otherwise
    cfg = write_mosquitto_config(
        fleet.root, workdir / "broker" / "mosquitto.conf", port=port, run_as_user=user
    )
    with open(logs / "broker.log", "wb") as log:
        proc = subprocess.Popen([exe, "-c", str(cfg.conf)], stdout=log, stderr=subprocess.STDOUT)
    _wait_port(port, proc, "mosquitto")
    return Broker(
        port,
        proc,
        f"mosquitto on 127.0.0.1:{port} (mutual TLS, per-gateway ACLs, fleet in {fleet.root})",
        tls=True,
        embedded=False,
        fleet_dir=fleet.root,
    )


@dataclass
class Procs:
    """The demo's child processes, stopped in reverse order (SIGTERM, then SIGKILL)."""

    env: dict[str, str]
    logs: Path
    items: list[subprocess.Popen] = field(default_factory=list)

    def add(self, p: subprocess.Popen) -> subprocess.Popen:
        self.items.append(p)
        return p

    def spawn(
        self,
        args: list[str],
        log_name: str,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        """Start ``args`` with stdout and stderr to ``logs/<log_name>``."""
        with open(self.logs / log_name, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                args, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
            )
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


@contextlib.contextmanager
def claim_workdir(workdir: Path | None) -> Iterator[Path]:
    """The run's folder, held for the run by an exclusive lock beside it.

    Without ``workdir`` each run gets a new folder under ``.farmiq/demo/``. A given
    ``workdir`` is wiped and reused, unless another demo holds it: then a clear refusal.
    """
    if workdir is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = DEFAULT_BASE / f"{stamp}-{os.getpid()}"
    workdir = workdir.resolve()
    workdir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = workdir.parent / f".{workdir.name}.lock"
    lock: IO[str] = open(lock_path, "w")  # noqa: SIM115 (held for the whole run)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"{workdir} is in use by another demo; pass another --workdir "
                "(or none: each run then gets its own folder)"
            ) from None
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        yield workdir
    finally:
        lock.close()


def create_admin_key(cp_conf: Path, name: str) -> str:
    """An admin API key made by ``farmiq provision api-key`` (the production path)."""
    from farmiq.cli import main as farmiq_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = farmiq_main(["provision", "api-key", "-c", str(cp_conf), "--name", name])
    if rc != 0:
        raise DemoError(f"could not create the demo's admin API key (exit {rc})")
    return out.getvalue().strip().splitlines()[-1]


def run_demo(
    workdir: Path | None = None,
    keep_running: bool = False,
    embedded_broker: bool = False,
    insecure: bool = False,
) -> int:
    try:
        with claim_workdir(workdir) as wd:
            return _run(wd, keep_running, embedded_broker, insecure)
    except DemoError as exc:
        print(f"farmiq demo: {exc}", file=sys.stderr)
        return 1


def _run(workdir: Path, keep_running: bool, embedded_broker: bool, insecure: bool) -> int:
    import httpx
    import onnxruntime as ort

    from farmiq_sim.barn_model import FEATURES, LABELS, train_barn_model

    logs = workdir / "logs"
    logs.mkdir()
    logging.getLogger("provisioning").setLevel(logging.WARNING)  # the demo says what it did
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "FEAST_USAGE": "False",
    }
    procs = Procs(env, logs)
    py = sys.executable
    say = print
    if insecure:
        print(
            "WARNING: --insecure: the operator API accepts every request without a key",
            file=sys.stderr,
        )
    try:
        t0 = time.time()
        broker = start_broker(workdir, logs, embedded_broker)
        if broker.proc:
            procs.add(broker.proc)
        if broker.embedded:
            print(
                "WARNING: the embedded broker is anonymous and unencrypted; "
                "install mosquitto for a broker with mutual TLS",
                file=sys.stderr,
            )
        say(f"[1/7] broker        {broker.description}")

        cp_port = free_port()
        cp_conf = workdir / "control-plane.toml"
        mqtt: dict[str, object] = {
            "host": "127.0.0.1",
            "port": broker.port,
            "client_id": f"farmiq-cp-demo-{cp_port}",
            "share_group": f"farmiq-demo-{cp_port}",
            "shared_subscription": not broker.embedded,
            "protocol": "3.1.1" if broker.embedded else "5",  # amqtt speaks 3.1.1 only
        }
        cp_settings: dict[str, object] = {
            "data_dir": str(workdir / "control-plane"),
            "host": "127.0.0.1",
            "port": cp_port,
            "auth_enabled": not insecure,
            "mqtt": mqtt,
        }
        if broker.fleet_dir is not None:
            from provisioning.fleet import FleetPaths

            fleet = FleetPaths(broker.fleet_dir)
            cp_settings["fleet_dir"] = str(fleet.root)
            mqtt.update(
                tls_ca=str(fleet.ca_cert), tls_cert=str(fleet.cp_cert), tls_key=str(fleet.cp_key)
            )
        cp_conf.write_text(dump_toml(cp_settings))
        headers: dict[str, str] = {}
        key = ""
        if not insecure:
            key = create_admin_key(cp_conf, "demo-admin")
            headers = {"Authorization": f"Bearer {key}"}
        cp_args = [py, "-m", "farmiq", "control-plane", "serve", "-c", str(cp_conf)]
        cp = procs.spawn(cp_args, "control-plane.log")
        api = f"http://127.0.0.1:{cp_port}"
        http = httpx.Client(base_url=api, headers=headers, timeout=120)
        wait_http(f"{api}/ready", 120, cp)
        auth = f"; admin API key: {key}" if key else "; auth OFF (--insecure)"
        say(f"[2/7] control plane {api} (SQLite, MLflow registry on SQLite){auth}")

        agent_dir = workdir / "gateway"
        agent_dir.mkdir()
        agent_port = free_port()
        device = f"barn-{secrets.token_hex(3)}"  # unique: two demos never share a name
        agent_env = {**env, "FARMIQ_AGENT__API__PORT": str(agent_port)}
        if broker.fleet_dir is not None:
            from provisioning.enroll_client import EnrollFailed, enroll

            r = http.post("/api/v1/enrollment/tokens", json={"device_id": device, "ttl_s": 600})
            r.raise_for_status()
            try:
                files = enroll(
                    api,
                    r.json()["token"],
                    device,
                    agent_dir,
                    state_dir=str(agent_dir / "state"),
                )
            except EnrollFailed as exc:
                raise DemoError(f"the gateway could not enroll: {exc}") from None
            agent_conf = files.config
            agent_env["FARMIQ_AGENT__MQTT__PORT"] = str(broker.port)  # its own broker
            joined = "enrolled with a one-time token, certificate from the fleet CA"
        else:
            trust = httpx.get(f"{api}/api/v1/trust-root", headers=headers).json()
            (agent_dir / "trust_root.json").write_text(json.dumps(trust))
            agent_conf = agent_dir / "agent.toml"
            agent_conf.write_text(
                dump_toml(
                    {
                        "device_id": device,
                        "farm_id": "demo-farm",
                        "state_dir": str(agent_dir / "state"),
                        "trust_root": str(agent_dir / "trust_root.json"),
                        "mqtt": {
                            "port": broker.port,
                            "protocol": "3.1.1" if broker.embedded else "5",  # amqtt: 3.1.1
                        },
                    }
                )
            )
            joined = "anonymous on the embedded broker"
        agent = procs.spawn(
            [py, "-m", "farmiq", "agent", "run", "-c", str(agent_conf)], "agent.log", env=agent_env
        )
        agent_url = f"http://127.0.0.1:{agent_port}"
        wait_http(f"{agent_url}/health", 60, agent)
        say(f"[3/7] gateway agent {device} at {agent_url} ({joined}; no model yet)")

        trained = train_barn_model()
        say(
            f"[4/7] trained       barn ventilation model (scikit-learn -> ONNX, "
            f"{len(trained.onnx_bytes)} bytes, accuracy {trained.accuracy:.2f})"
        )

        meta = {"task": "classification", "labels": LABELS, "feature_names": FEATURES}
        r = http.post(
            "/api/v1/models/register",
            files={
                "file": ("model.onnx", trained.onnx_bytes),
                "reference": ("reference.json", json.dumps(trained.reference)),
            },
            data={"name": "barn-ventilation", "meta": json.dumps(meta)},
        )
        r.raise_for_status()
        version = r.json()["version"]
        http.put(
            "/api/v1/models/barn-ventilation/promote", json={"version": version}
        ).raise_for_status()
        say(
            f"[5/7] registry      barn-ventilation v{version} registered in MLflow "
            "and promoted to @production"
        )

        r = http.post(
            "/api/v1/deployments", json={"model": "barn-ventilation", "devices": [device]}
        )
        r.raise_for_status()
        dep = r.json()
        deadline = time.time() + 60
        status = "sent"
        while time.time() < deadline:
            status = http.get(f"/api/v1/deployments/{dep['id']}").json()["devices"][device][
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
        say(f"done in {time.time() - t0:.1f}s. Folder: {workdir}")
        if not agree:
            return 1
        if keep_running:
            _serve_on(procs, workdir, api, agent_url, key)
        return 0
    except DemoError:
        raise
    except (httpx.HTTPError, TimeoutError, RuntimeError) as exc:
        raise DemoError(f"{exc} (logs in {logs})") from None
    finally:
        procs.stop()


def _serve_on(procs: Procs, workdir: Path, api: str, agent_url: str, key: str) -> None:
    """Keep everything up; start the MLflow UI with its artifacts in the demo's folder."""
    ml_port = free_port()
    mlflow_db = workdir / "control-plane" / "mlflow.db"
    ml_artifacts = workdir / "mlflow-artifacts"
    ml = procs.spawn(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{mlflow_db}",
         "--artifacts-destination", str(ml_artifacts),
         "--host", "127.0.0.1", "--port", str(ml_port)],
        "mlflow.log",
        cwd=workdir,  # anything MLflow writes by default lands in the demo's folder
    )  # fmt: skip
    print(f"operator API  {api}/docs")
    print(f"dashboard     {api}/dashboard")
    if key:
        print(f"API key       {key}  (Authorization: Bearer <key>)")
    print(f"gateway API   {agent_url}/api/v1/models")
    try:
        wait_http(f"http://127.0.0.1:{ml_port}/health", 120, ml)
        print(f"MLflow UI     http://127.0.0.1:{ml_port}")
    except (TimeoutError, RuntimeError) as exc:
        print(f"MLflow UI     did not start: {exc} (see {procs.logs / 'mlflow.log'})")
    print("Ctrl-C to stop.")
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
