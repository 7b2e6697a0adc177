"""With authentication on: the dashboard and its data need a viewer key (a browser hands
it over once, then holds it in a cookie); a farm's data can be exported as an archive and
erased, across the database, drift windows, MLflow decisions and Feast rows, with a
report and an audit record, leaving the other farms untouched."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from farmiq import topics
from tests.ops.conftest import publish
from tests.support.procs import ENV, ControlPlaneProc

MODEL = "farm-rights-climate"
FEATURES = ["temp_c", "humidity"]


class Secure:
    def __init__(self, proc: ControlPlaneProc, keys: dict[str, str]) -> None:
        self.proc, self.keys = proc, keys

    def call(self, method: str, path: str, role: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.request(method, self.proc.url + path, headers=headers, timeout=120, **kw)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, mqtt_port: int) -> Iterator[Secure]:
    work = tmp_path_factory.mktemp("rights-cp")
    proc = ControlPlaneProc(work, mqtt_port, auth_enabled=True, auth_max_failures=50)
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "provision", "api-key", "-c", str(work / "cp.toml"),
         "--name", "bootstrap"],
        env=ENV, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    keys = {"admin": out.stdout.strip().splitlines()[-1]}
    proc.start()
    cp = Secure(proc, keys)
    for role in ("viewer", "operator"):
        r = cp.call("POST", "/api/v1/security/keys", "admin", json={"name": role, "role": role})
        assert r.status_code == 200, r.text
        keys[role] = r.json()["key"]
    yield cp
    proc.stop()


def test_dashboard_and_its_data_need_a_viewer_key(secure: Secure) -> None:
    url = secure.proc.url
    assert httpx.get(url + "/dashboard/data").status_code == 401
    assert httpx.get(url + "/dashboard").status_code == 401
    assert httpx.get(url + "/dashboard", headers={"X-API-Key": "fiq_bad"}).status_code == 401
    r = secure.call("GET", "/dashboard/data", "viewer")
    assert r.status_code == 200 and "devices" in r.json()
    # A browser: the key once in the URL, then a cookie; the URL loses the key.
    with httpx.Client(base_url=url, follow_redirects=False) as browser:
        r = browser.get("/dashboard", params={"key": secure.keys["viewer"]})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = browser.get("/dashboard")
        assert page.status_code == 200 and 'id="dashboard-data"' in page.text
        assert browser.get("/dashboard/data").status_code == 200  # the page's own fetches
    assert httpx.get(url + "/dashboard/static/plot.js").status_code == 200  # code, no data


def _manifest(archive: bytes, farm: str) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return json.loads(tar.extractfile(f"farm-{farm}/manifest.json").read())  # type: ignore[union-attr,no-any-return]


def _window(dev: str, farm: str, ref: dict[str, Any], shift: float) -> bytes:
    from edge_agent.telemetry.drift_stats import DriftStats, encode_window

    rng = np.random.default_rng(abs(hash(dev)) % 2**32)
    x = rng.normal(size=(400, 2)) + shift
    start = time.time() - 120
    stats = DriftStats(dev, farm_id=farm, clock=lambda: start)
    stats.register(MODEL, "1", ref)
    stats.observe(MODEL, "1", x, x[:, 0])
    (w,) = stats.close_window(now=start + 60)
    return encode_window(w)


def test_a_farm_is_exported_then_erased_and_the_other_farm_is_untouched(
    secure: Secure, mqtt_port: int, tmp_path: Path
) -> None:
    from farmiq.drift_reference import build_reference

    tag = uuid.uuid4().hex[:6]
    farm_a, farm_b = f"farm-a-{tag}", f"farm-b-{tag}"
    a_devs = [f"gw-rights-{tag}-a{i}" for i in range(2)]
    b_dev = f"gw-rights-{tag}-b0"
    ref_x = np.random.default_rng(1).normal(size=(3000, 2))
    ref = build_reference({f: ref_x[:, i] for i, f in enumerate(FEATURES)}, prediction=ref_x[:, 0])
    r = secure.call("POST", "/api/v1/drift/reference", "operator",
                    json={"model": MODEL, "reference": ref})  # fmt: skip
    assert r.status_code == 200, r.text
    for dev, farm, pen in [(a_devs[0], farm_a, "pen-a0"), (a_devs[1], farm_a, "pen-a1"),
                           (b_dev, farm_b, "pen-b0")]:  # fmt: skip
        state = {"device_id": dev, "farm_id": farm, "models": {}, "entities": {"pen_id": [pen]}}
        publish(mqtt_port, topics.up(dev, topics.STATE), orjson.dumps(state))
        publish(mqtt_port, topics.up(dev, topics.DRIFT), _window(dev, farm, ref, 2.0))
    concept = {"type": "concept_drift", "device_id": a_devs[0], "model": MODEL,
               "detector": "ddm", "previous": "warning", "state": "drift", "n_seen": 900,
               "estimate": 0.4, "at": time.time() - 30}  # fmt: skip
    publish(mqtt_port, topics.up(a_devs[0], topics.DRIFT), orjson.dumps(concept))
    readings = [[p, "temp_c", time.time() - 60, 21.5] for p in ("pen-a0", "pen-a1", "pen-b0")]
    assert secure.call("POST", "/api/v1/features/readings", "operator",
                       json={"readings": readings}).status_code == 200  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline:
        exported = secure.call("GET", f"/api/v1/farms/{farm_a}/export", "viewer")
        if exported.status_code == 200:
            tables = _manifest(exported.content, farm_a)["tables"]
            if tables.get("drift_windows") == 2 and tables.get("drift_concept_events"):
                break
        time.sleep(0.3)
    # A retraining decision (an MLflow run) that names farm A's gateway.
    r = secure.call("POST", "/api/v1/retraining/trigger", "operator",
                    json={"model": MODEL, "force": True, "since": 0})  # fmt: skip
    assert r.status_code == 200, r.text

    exp = secure.call("GET", f"/api/v1/farms/{farm_a}/export", "viewer")
    assert exp.status_code == 200 and exp.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(exp.content), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    manifest = json.loads(files[f"farm-{farm_a}/manifest.json"])
    assert manifest["devices"] == sorted(a_devs)
    assert manifest["tables"]["devices"] == 2 and manifest["tables"]["drift_windows"] == 2
    assert manifest["tables"]["drift_concept_events"] == 1
    assert manifest["features"].get("readings") == 2
    assert manifest["mlflow_runs"] >= 1
    windows = json.loads(files[f"farm-{farm_a}/tables/drift_windows.json"])
    assert {w["device_id"] for w in windows} == set(a_devs)
    assert all(isinstance(w["payload"], dict) for w in windows)  # the window as sent
    blob = b"".join(files.values())
    assert b_dev.encode() not in blob and farm_b.encode() not in blob

    assert secure.call("DELETE", f"/api/v1/farms/{farm_a}", "operator",
                       params={"confirm": farm_a}).status_code == 403  # fmt: skip
    assert secure.call("DELETE", f"/api/v1/farms/{farm_a}", "admin",
                       params={"confirm": "another"}).status_code == 422  # fmt: skip
    r = secure.call("DELETE", f"/api/v1/farms/{farm_a}", "admin", params={"confirm": farm_a})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["tables"]["devices"] == 2 and report["tables"]["drift_windows"] == 2
    assert report["tables"]["drift_concept_events"] == 1
    assert report["features"]["readings"] == 2
    assert len(report["mlflow_runs_redacted"]) >= 1
    assert report["redacted"]["drift_retraining_decisions"] >= 1

    # Nothing of farm A is left to export; farm B is all there.
    assert secure.call("GET", f"/api/v1/farms/{farm_a}/export", "viewer").status_code == 404
    decisions = secure.call("GET", f"/api/v1/retraining/decisions/{MODEL}", "viewer").text
    assert not any(d in decisions for d in a_devs) and "<erased>" in decisions
    b = secure.call("GET", f"/api/v1/farms/{farm_b}/export", "viewer")
    assert b.status_code == 200
    mb = _manifest(b.content, farm_b)
    assert mb["tables"]["drift_windows"] == 1 and mb["features"]["readings"] == 1
    audit = secure.call("GET", "/api/v1/audit", "admin", params={"action": "farm.erase"}).json()
    entries = audit.get("entries", audit) if isinstance(audit, dict) else audit
    assert any(e["target"] == f"farm/{farm_a}" for e in entries)
    assert re.fullmatch(r"\d+", str(report["audit_id"]))
