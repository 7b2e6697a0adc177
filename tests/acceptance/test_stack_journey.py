"""The whole job on the production topology (``farmiq stack up --gateways 2``), through
public interfaces only: the MLflow client, the operator HTTP API with API keys, the
``farmiq rollout`` CLI, the gateways' local API, and MQTT over mutual TLS.

A data scientist logs a model to the MLflow tracking server and registers it; an operator
promotes it (it is published to Triton through the repository API) and rolls it out in
stages; one control-plane replica is SIGKILLed mid-rollout and the other finishes; both
gateways install over mTLS, answer locally and offload low-confidence rows to Triton;
drifted readings arrive in drift windows, the retraining decision says retrain, the
trigger runs and the drift alert arrives on ``farmiq/v1/cp/alert/drift``.

Set FARMIQ_ACCEPTANCE_WORKDIR to run against a stack already up (it is left running).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from farmiq_sim.stack.processes import ProcessTable
from farmiq_sim.stack.stack import StackInfo

pytestmark = pytest.mark.timeout(600)
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
DRIFT_WINDOW_S = 3.0


def _farmiq(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmiq", *args],
        env=ENV, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    existing = os.environ.get("FARMIQ_ACCEPTANCE_WORKDIR")
    if existing:
        yield StackInfo.load(Path(existing))
        return
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is required (scripts/bootstrap.sh installs it)")
    workdir = tmp_path_factory.mktemp("stack") / "stack"
    up = _farmiq(
        "stack", "up", "--workdir", str(workdir), "--gateways", "2",
        "--drift-window-s", str(DRIFT_WINDOW_S), timeout=540,
    )  # fmt: skip
    try:
        assert up.returncode == 0, (
            f"farmiq stack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        )
        info = StackInfo.load(workdir)
        for url in [info.mlflow_url, info.triton_url, *info.control_planes]:
            assert url in up.stdout  # `up` printed every URL and the operator key
        assert info.api_key in up.stdout
        yield info
    finally:
        table = ProcessTable(workdir)
        pids = {n: int(str((table.record(n) or {}).get("pid", 0))) for n in table.names()}
        down = _farmiq("stack", "down", "--workdir", str(workdir), timeout=120)
        assert down.returncode == 0, down.stderr
        # `down` stopped every process `up` started (control-plane-1 was killed already).
        assert [n for n, pid in pids.items() if pid and _running(pid)] == []
        purge = _farmiq("stack", "down", "--purge", "--workdir", str(workdir), timeout=120)
        assert purge.returncode == 0 and not workdir.exists(), purge.stderr


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class AlertListener:
    """An operator's alert consumer on the fleet broker (mutual TLS, its own identity)."""

    def __init__(self, info: StackInfo) -> None:
        from provisioning.fleet import FleetPaths

        fleet = FleetPaths(Path(info.fleet_dir))
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ops-{uuid.uuid4().hex[:8]}",
                        protocol=mqtt.MQTTv5)  # fmt: skip
        c.tls_set(
            ca_certs=str(fleet.ca_cert), certfile=str(fleet.cp_cert), keyfile=str(fleet.cp_key)
        )
        c.on_connect = lambda cl, *_: cl.subscribe("farmiq/v1/cp/alert/#", qos=1)
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_message = lambda _c, _u, m: self.messages.append((m.topic, json.loads(m.payload)))
        c.connect("127.0.0.1", info.mqtt_port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10), "could not subscribe to alerts over mTLS"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(what: str, fn: Any, timeout: float = 90, every: float = 0.5) -> Any:
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_the_whole_job_on_the_production_topology(stack: StackInfo) -> None:
    import mlflow
    import onnx
    import onnxruntime as ort

    from farmiq_sim.barn_model import FEATURES, LABELS, synthetic_barn, train_barn_model

    t0 = time.time()
    cp1, cp2 = stack.control_planes
    status = _farmiq("stack", "status", "--workdir", stack.workdir)
    assert status.returncode == 0, status.stdout  # every part healthy
    assert status.stdout.count(" ok\n") == 8 + len(stack.gateways), status.stdout
    admin = {"Authorization": f"Bearer {stack.api_key}"}
    assert httpx.get(f"{cp1}/api/v1/models", timeout=10).status_code == 401  # auth is on
    keys = {}
    for role in ("operator",):
        r = httpx.post(f"{cp1}/api/v1/security/keys", headers=admin, timeout=30,
                       json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role})  # fmt: skip
        assert r.status_code == 200, r.text
        keys[role] = {"Authorization": f"Bearer {r.json()['key']}"}
    op = keys["operator"]

    # 1. the data scientist: the plain MLflow client against the tracking server
    trained = train_barn_model(n=2000, seed=5)
    mlflow.set_tracking_uri(stack.mlflow_url)
    mlflow.set_experiment(f"barn-ds-{uuid.uuid4().hex[:6]}")
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", trained.accuracy)
        mlflow.log_dict(trained.reference, "farmiq/reference.json")  # drift baseline
        logged = mlflow.onnx.log_model(
            onnx.load_from_string(trained.onnx_bytes), name="model",
            pip_requirements=["onnxruntime"],
        )  # fmt: skip
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, no shared disk
    name = f"barn-{uuid.uuid4().hex[:6]}"
    serving = {"targets": ["edge", "cloud"], "confidence_threshold": 0.9}
    r = httpx.post(
        f"{cp1}/api/v1/models/register", headers=op, timeout=120,
        json={"name": name, "source_uri": f"runs:/{run.info.run_id}/model",
              "labels": LABELS, "feature_names": FEATURES, "serving": serving},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert httpx.post(  # a models:/ URI registers too
        f"{cp2}/api/v1/models/register", headers=op, timeout=120,
        json={"name": f"{name}-copy", "source_uri": logged.model_uri},
    ).status_code == 200  # fmt: skip

    # 2. the operator promotes it: published to Triton with the files in the load request
    r = httpx.put(f"{cp1}/api/v1/models/{name}/promote", headers=op, json={"version": version},
                  timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    _wait("Triton to serve the promoted model", lambda: httpx.get(
        f"{stack.triton_url}/v2/models/{name}/versions/{version}/ready", timeout=5
    ).status_code == 200, timeout=60)  # fmt: skip
    assert not (Path(stack.workdir) / "triton" / "repository" / name).exists()

    # 3. a staged rollout through the CLI; replica 1 dies mid-rollout, replica 2 finishes it
    create = _farmiq(
        "rollout", "--url", cp1, "--api-key", op["Authorization"].split()[1], "create", name,
        "--version", str(version), "--waves", "50,100", "--soak", "2", "--rate", "600",
        "--wave-timeout", "120",
    )  # fmt: skip
    assert create.returncode == 0, create.stderr
    rollout_id = json.loads(create.stdout)["id"]

    def rollout(url: str) -> dict[str, Any]:
        return httpx.get(f"{url}/api/v1/rollouts/{rollout_id}", headers=op, timeout=10).json()  # type: ignore[no-any-return]

    _wait("the first wave to start", lambda: rollout(cp1)["status"] == "running"
          and sum(rollout(cp1)["waves"][0]["devices"].values()) > 0, timeout=60)  # fmt: skip
    assert ProcessTable(Path(stack.workdir)).kill("control-plane-1")  # SIGKILL
    done = _wait("replica 2 to finish the rollout",
                 lambda: (d := rollout(cp2))["status"] in ("succeeded", "failed", "aborted",
                                                            "rolled_back", "paused") and d,
                 timeout=180)  # fmt: skip
    assert done["status"] == "succeeded", done
    status = _farmiq("stack", "status", "--workdir", stack.workdir)
    assert status.returncode == 3 and "dead" in next(
        ln for ln in status.stdout.splitlines() if ln.startswith("control-plane-1")
    ), status.stdout
    watch = _farmiq("rollout", "--url", cp2, "--api-key", op["Authorization"].split()[1],
                    "get", rollout_id)  # fmt: skip
    assert json.loads(watch.stdout)["status"] == "succeeded"

    # 4. both gateways installed it over mTLS, answer locally, offload when unsure
    sess = ort.InferenceSession(trained.onnx_bytes, providers=["CPUExecutionProvider"])
    probs = np.clip(sess.run(None, {sess.get_inputs()[0].name: trained.X_test})[1], 1e-12, 1)
    # the gateway's confidence: 1 - normalized entropy of the class probabilities
    conf = 1 + (probs * np.log(probs)).sum(axis=1) / np.log(probs.shape[1])
    sure = trained.X_test[conf >= 0.97][:4].tolist()
    unsure = trained.X_test[conf < 0.5][:4].tolist()
    assert sure and unsure
    for gw in stack.gateways:
        m = httpx.get(f"{gw.api_url}/api/v1/models/{name}", timeout=10).json()
        assert m["version"] == version, m
        local = httpx.post(f"{gw.api_url}/api/v1/inference", timeout=30,
                           json={"model": name, "inputs": sure, "cache": False}).json()  # fmt: skip
        assert local["target"] == "edge", local
        cloud = httpx.post(f"{gw.api_url}/api/v1/inference", timeout=30,
                           json={"model": name, "inputs": unsure, "cache": False}).json()  # fmt: skip
        assert cloud["target"] == "edge+cloud" and cloud["escalated_rows"] == len(unsure), cloud
        expected = np.asarray(
            sess.run(None, {sess.get_inputs()[0].name: np.asarray(unsure, np.float32)})[0]
        )
        assert np.array_equal(np.asarray(cloud["outputs"]["label"]), expected)

    # 5. drifted readings -> drift windows -> the retraining decision -> trigger -> alert
    alerts = AlertListener(stack)
    try:
        drifted, _ = synthetic_barn(4000, seed=11, shift=2.5)
        rows = drifted.tolist()

        def drifted_traffic_and_decision() -> dict[str, Any] | None:
            for gw in stack.gateways:
                for i in range(0, 512, 64):
                    httpx.post(f"{gw.api_url}/api/v1/inference", timeout=30,
                               json={"model": name, "inputs": rows[i : i + 64], "cache": False})  # fmt: skip
            d = httpx.post(f"{cp2}/api/v1/retraining/decision", headers=op, timeout=60,
                           json={"model": name}).json()  # fmt: skip
            return d if d.get("retrain") else None

        decision = _wait("the drift windows to call for retraining",
                         drifted_traffic_and_decision, timeout=240, every=DRIFT_WINDOW_S)  # fmt: skip
        assert decision["retrain"] and decision["reasons"], decision
        r = httpx.post(f"{cp2}/api/v1/retraining/trigger", headers=op, timeout=60,
                       json={"model": name})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["triggered"] or r.json().get("mlflow_run_id"), r.json()
        drift = _wait("the drift alert on MQTT", lambda: [
            a for t, a in alerts.messages if t == "farmiq/v1/cp/alert/drift" and a["model"] == name
        ], timeout=30)[0]  # fmt: skip
        assert drift["kind"] == "drift" and drift["severity"] in ("warning", "critical")
        done = _wait("the retraining alert on MQTT", lambda: [
            a for t, a in alerts.messages
            if t == "farmiq/v1/cp/alert/retraining_finished" and a["model"] == name
        ], timeout=30)[0]  # fmt: skip
        run_id = done["details"]["mlflow_run_id"]
        assert mlflow.MlflowClient().get_run(run_id).data.tags["farmiq.model"] == name
    finally:
        alerts.close()
    print(f"journey done in {time.time() - t0:.0f}s")
