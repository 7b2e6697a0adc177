"""The real control plane with ``auth_enabled`` and a fleet: keys and roles on every
endpoint of every area, central audit of changes, throttling, enrollment, revoked devices
getting no bundles, and a signed rollback order deployed end to end to a real agent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.security.policy import required_role
from control_plane.security.roles import Role
from provisioning.enroll_client import enroll
from provisioning.fleet import FleetPaths, init_fleet
from tests.security.helpers import scale_model
from tests.support.procs import ENV, ControlPlaneProc

MODEL = "sec-scale"


@dataclass
class SecureCP:
    proc: ControlPlaneProc
    fleet: FleetPaths
    keys: dict[str, str]  # role -> key

    def call(self, method: str, path: str, role: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        headers.update(kw.pop("headers", {}))
        return httpx.request(method, self.proc.url + path, headers=headers, timeout=60, **kw)


@pytest.fixture(scope="module")
def secure_cp(tmp_path_factory: pytest.TempPathFactory, mqtt_port: int) -> Iterator[SecureCP]:
    work = tmp_path_factory.mktemp("secure-cp")
    fleet = init_fleet(work / "fleet", root_threshold=2, root_keys=3)
    proc = ControlPlaneProc(
        work,
        mqtt_port,
        auth_enabled=True,
        auth_lockout_s=2.0,
        fleet_dir=str(fleet.root),
        signing_keys=[str(fleet.targets_key(1))],  # bundles signed by the fleet's targets key
    )
    # Bootstrap: the first admin key comes from the CLI, before the API is up.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "farmiq",
            "provision",
            "api-key",
            "-c",
            str(work / "cp.toml"),
            "--name",
            "bootstrap",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    admin = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"fiq_[0-9a-f]{8}_[\w-]+", admin), out.stdout
    proc.start()
    cp = SecureCP(proc, fleet, {"admin": admin})
    for role in ("viewer", "operator"):
        r = cp.call("POST", "/api/v1/security/keys", "admin", json={"name": role, "role": role})
        assert r.status_code == 200, r.text
        cp.keys[role] = r.json()["key"]
    yield cp
    proc.stop()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nonexistent", path)


def test_every_api_endpoint_of_every_area_needs_a_key_with_its_role(secure_cp: SecureCP) -> None:
    spec = secure_cp.call("GET", "/openapi.json").json()
    checked = 0
    for path, ops in spec["paths"].items():
        for method in ops:
            method = method.upper()
            needed = required_role(method, path)
            if not path.startswith("/api/v1"):
                continue
            url = _concrete(path)
            if needed is None:  # public by design: enroll (token), CRL, trust root
                assert (method, path) in {
                    ("POST", "/api/v1/enrollment/enroll"),
                    ("GET", "/api/v1/enrollment/crl.pem"),
                    ("GET", "/api/v1/trust-root"),
                }
                continue
            no_key = secure_cp.call(method, url)
            assert no_key.status_code == 401, (method, path, no_key.text)
            assert no_key.headers["www-authenticate"] == "Bearer"
            bad = secure_cp.call(method, url, headers={"X-API-Key": "fiq_0000_wrong"})
            assert bad.status_code in (401, 429), (method, path)
            for role in ("viewer", "operator", "admin"):
                if Role.parse(role) < needed:
                    r = secure_cp.call(method, url, role)
                    assert r.status_code == 403, (method, path, role, r.text)
                elif method == "GET":  # reads are safe to run: the key must let them through
                    r = secure_cp.call(method, url, role)
                    assert r.status_code not in (401, 403, 429), (method, path, role, r.text)
            checked += 1
    # the areas' routers are all behind the gate: registry, deployments, audit, enrollment...
    assert checked >= 15, checked
    # path spellings that reach no handler without a key
    for trick in ("//api/v1/models", "/api/v1/models/", "/api/v1//models", "/API/v1/models"):
        assert secure_cp.call("GET", trick).status_code in (401, 404, 307), trick
    assert secure_cp.call("GET", "/health").status_code == 200  # probes stay open
    assert secure_cp.call("GET", "/api/v1/trust-root").status_code == 200


def test_changes_are_audited_with_who_what_when_where(secure_cp: SecureCP) -> None:
    body = {"model": "no-such-model", "devices": ["gw-audit"]}
    assert secure_cp.call("POST", "/api/v1/deployments", "viewer", json=body).status_code == 403
    r = secure_cp.call("POST", "/api/v1/deployments", "operator", json=body)
    assert r.status_code not in (401, 403), r.text
    rows = secure_cp.call(
        "GET", "/api/v1/audit", "admin", params={"target": "/api/v1/deployments", "limit": 10}
    ).json()
    mine = rows[:2]  # newest first
    assert [(e["actor"], e["action"], e["detail"]["status"]) for e in mine] == [
        ("apikey:operator", "http.post", r.status_code),
        ("apikey:viewer", "http.post", 403),  # refused attempts are recorded too
    ]
    assert all(e["source_ip"] == "127.0.0.1" for e in mine)
    # Only admins read the log; reads are not logged as changes.
    assert secure_cp.call("GET", "/api/v1/audit", "operator").status_code == 403
    log = secure_cp.call("GET", "/api/v1/audit", "admin", params={"limit": 1000}).json()
    actions = {e["action"] for e in log}  # the whole log: the keys were made at the start
    assert "http.get" not in actions and "apikey.create" in actions


def test_revoked_api_key_stops_working(secure_cp: SecureCP) -> None:
    r = secure_cp.call("POST", "/api/v1/security/keys", "admin", json={"name": "temp"})
    temp = r.json()["key"]
    h = {"Authorization": f"Bearer {temp}"}
    assert secure_cp.call("GET", "/api/v1/models", headers=h).status_code == 200
    assert secure_cp.call("DELETE", "/api/v1/security/keys/temp", "admin").status_code == 200
    assert secure_cp.call("GET", "/api/v1/models", headers=h).status_code == 401
    listed = {k["name"]: k for k in secure_cp.call("GET", "/api/v1/security/keys", "admin").json()}
    assert listed["temp"]["revoked"] and temp not in json.dumps(listed)


def _register(cp: SecureCP, k: float) -> int:
    meta = {"task": "regression"}
    r = cp.call(
        "POST",
        "/api/v1/models/register",
        "operator",
        files={"file": ("m.onnx", scale_model(k))},
        data={"name": MODEL, "meta": json.dumps(meta)},
    )
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


@pytest.fixture(scope="module")
def versions(secure_cp: SecureCP) -> dict[float, int]:
    return {k: _register(secure_cp, k) for k in (1.0, 2.0)}


def _deploy(cp: SecureCP, device: str, version: int, **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "version": version, "devices": [device], **extra}
    r = cp.call("POST", "/api/v1/deployments", "operator", json=body)
    assert r.status_code == 200, r.text
    dep = r.json()["id"]
    deadline = time.time() + 30
    while time.time() < deadline:
        got = cp.call("GET", f"/api/v1/deployments/{dep}", "viewer").json()["devices"][device]
        if got["status"] != "sent":
            return got  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError("deployment never acknowledged")


def test_enrolled_then_revoked_device_gets_no_more_bundles(
    secure_cp: SecureCP, versions: dict[float, int], tmp_path: Path
) -> None:
    device = f"gw-{uuid.uuid4().hex[:8]}"
    r = secure_cp.call(
        "POST", "/api/v1/enrollment/tokens", "admin", json={"device_id": device, "ttl_s": 600}
    )
    assert r.status_code == 200, r.text
    files = enroll(secure_cp.proc.url, r.json()["token"], device, tmp_path / "gw")
    assert files.config.exists()
    devices = secure_cp.call("GET", "/api/v1/enrollment/devices", "viewer").json()
    assert {"device_id": device, "active": True}.items() <= next(
        d for d in devices if d["device_id"] == device
    ).items()
    body = {"model": MODEL, "version": versions[2.0], "devices": [device]}
    assert secure_cp.call("POST", "/api/v1/deployments", "operator", json=body).status_code == 200
    revoke = f"/api/v1/enrollment/devices/{device}/revoke"
    assert secure_cp.call("POST", revoke, "operator").status_code == 403
    r = secure_cp.call(
        "POST", f"/api/v1/enrollment/devices/{device}/revoke", "admin", json={"reason": "stolen"}
    )
    assert r.status_code == 200, r.text
    refused = secure_cp.call("POST", "/api/v1/deployments", "operator", json=body)
    assert refused.status_code == 409 and "revoked" in refused.text, refused.text
    # and the revocation is audited with who did it
    rows = secure_cp.call("GET", "/api/v1/audit", "admin", params={"target": device}).json()
    assert any(e["action"] == "device.revoke" and e["actor"] == "apikey:bootstrap" for e in rows)


def test_signed_rollback_order_end_to_end(
    secure_cp: SecureCP, versions: dict[float, int], agent_factory: Any
) -> None:
    device = f"gw-{uuid.uuid4().hex[:8]}"
    agent = agent_factory(device, secure_cp.fleet.root_json)  # the fleet's TUF root
    agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
    v1, v2 = versions[1.0], versions[2.0]

    def answer() -> float:
        r = agent.post("/api/v1/inference", {"model": MODEL, "inputs": [[1.0, 1.0]]})
        return float(r.json()["outputs"]["y"][0][0])

    assert _deploy(secure_cp, device, v2)["status"] == "installed"
    assert answer() == 2.0
    plain = _deploy(secure_cp, device, v1)  # a downgrade without an order
    assert (plain["status"], plain["code"]) == ("rejected", "rollback"), plain
    assert answer() == 2.0
    stale = _deploy(secure_cp, device, v1, rollback_of=v2 + 5)  # an order for another state
    assert (stale["status"], stale["code"]) == ("rejected", "rollback"), stale
    order = _deploy(secure_cp, device, v1, rollback_of=v2)  # the signed rollback order
    assert order["status"] == "installed", order
    assert agent.installed_version(MODEL) == v1 and answer() == 1.0


def test_failed_auth_is_throttled_then_released(secure_cp: SecureCP) -> None:
    # last in the module: it locks 127.0.0.1 out for auth_lockout_s (2 s here)
    for _ in range(5):
        guess = secure_cp.call("GET", "/api/v1/models", headers={"X-API-Key": "fiq_x_y"})
        assert guess.status_code == 401
    locked = secure_cp.call("GET", "/api/v1/models", "admin")  # even a good key waits
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
    time.sleep(2.2)
    assert secure_cp.call("GET", "/api/v1/models", "admin").status_code == 200
