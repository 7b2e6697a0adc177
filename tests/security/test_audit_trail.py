"""Every change made through the operator API is in the audit log with who did it and the
object's state before -> after, read back from a real control plane (auth on, a fleet):
a promotion moves the production alias, a rollout is created then paused, a device is
revoked, an API key is created and revoked. Farm erasure needs the admin role in the
policy itself."""

from __future__ import annotations

import json
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
from provisioning.fleet import init_fleet
from tests.security.helpers import scale_model
from tests.support.procs import ControlPlaneProc

MODEL = "audit-scale"


@dataclass
class CP:
    proc: ControlPlaneProc
    keys: dict[str, str]

    def call(self, method: str, path: str, role: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return httpx.request(method, self.proc.url + path, headers=headers, timeout=60, **kw)

    def entries(self, target: str, action: str | None = None) -> list[dict[str, Any]]:
        params = {"target": target, **({"action": action} if action else {})}
        r = self.call("GET", "/api/v1/audit", "admin", params=params)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory, mqtt_port: int) -> Iterator[CP]:
    work = tmp_path_factory.mktemp("audit-cp")
    fleet = init_fleet(work / "fleet", root_threshold=1, root_keys=1)
    proc = ControlPlaneProc(
        work, mqtt_port, auth_enabled=True, fleet_dir=str(fleet.root),
        signing_keys=[str(fleet.targets_key(1))],
    )  # fmt: skip
    admin = proc.api_key("root")
    proc.start()
    c = CP(proc, {"admin": admin})
    r = c.call("POST", "/api/v1/security/keys", "admin", json={"name": "ops", "role": "operator"})
    assert r.status_code == 200, r.text
    c.keys["operator"] = r.json()["key"]
    yield c
    proc.stop()


def _register(cp: CP, k: float) -> int:
    r = cp.call(
        "POST", "/api/v1/models/register", "operator",
        files={"file": ("m.onnx", scale_model(k))},
        data={"name": MODEL, "meta": json.dumps({"task": "regression"})},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


@pytest.fixture(scope="module")
def versions(cp: CP) -> list[int]:
    return [_register(cp, 1.0), _register(cp, 2.0)]


def test_promotion_records_the_aliases_before_and_after(cp: CP, versions: list[int]) -> None:
    v1, v2 = versions
    since = time.time()
    for v in (v1, v2):
        r = cp.call("PUT", f"/api/v1/models/{MODEL}/promote", "operator", json={"version": v})
        assert r.status_code == 200, r.text
    first, second = reversed(cp.entries(MODEL, "model.promote"))  # newest first
    assert first["actor"] == second["actor"] == "apikey:ops"
    assert first["detail"]["before"]["aliases"] == {}
    assert first["detail"]["after"]["aliases"] == {"production": v1}
    assert second["detail"]["before"]["aliases"] == {"production": v1}
    assert second["detail"]["after"]["aliases"] == {"production": v2}
    assert second["detail"]["status"] == 200
    assert second["detail"]["path"] == f"/api/v1/models/{MODEL}/promote"
    # queryable by time: nothing of it before the test started
    old = cp.call("GET", "/api/v1/audit", "admin", params={
        "target": MODEL, "until": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(since - 60)),
    }).json()  # fmt: skip
    assert old == []
    # a refused promotion (no such version) still shows that nothing moved
    r = cp.call("PUT", f"/api/v1/models/{MODEL}/promote", "operator", json={"version": 99})
    assert r.status_code == 404
    refused = cp.entries(MODEL, "model.promote")[0]
    assert refused["detail"]["status"] == 404
    assert refused["detail"]["before"] == refused["detail"]["after"]
    # the registration itself: a version that did not exist before
    reg = cp.entries(f"{MODEL}@{v2}", "model.register")
    assert reg and reg[0]["detail"]["before"] is None
    assert reg[0]["detail"]["after"]["version"] == v2


def test_rollout_create_and_pause_record_their_state(cp: CP, versions: list[int]) -> None:
    body = {
        "model": MODEL, "version": versions[1],
        "targeting": {"devices": [f"gw-{uuid.uuid4().hex[:8]}"]},
        "waves": [{"percent": 100}], "soak_s": 60,
    }  # fmt: skip
    r = cp.call("POST", "/api/v1/rollouts", "operator", json=body)
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    r = cp.call("POST", f"/api/v1/rollouts/{rid}/pause", "operator")
    assert r.status_code == 200, r.text
    by_action = {e["action"]: e for e in cp.entries(rid) if e["actor"] == "apikey:ops"}
    created = by_action["rollout.create"]["detail"]
    assert created["before"] is None and created["after"]["status"] in ("pending", "running")
    paused = by_action["rollout.pause"]["detail"]
    assert paused["before"]["status"] != "paused"
    assert paused["after"] == {"status": "paused", "wave": paused["before"]["wave"]}


def test_bundle_build_and_drift_baseline_record_what_they_made(cp: CP, versions: list[int]) -> None:
    r = cp.call(
        "POST", "/api/v1/bundles", "operator", json={"model": MODEL, "version": versions[0]}
    )
    assert r.status_code == 200, r.text
    bid = r.json()["bundle_id"]
    (built,) = cp.entries(bid, "bundle.build")
    assert built["actor"] == "apikey:ops" and built["detail"]["before"] is None
    assert built["detail"]["after"]["sha256"] == r.json()["sha256"]

    from farmiq.drift_reference import build_reference

    ref = build_reference({"x0": [float(i) for i in range(100)], "x1": [1.0] * 100})
    schemas = []
    for _ in range(2):  # the first sets a baseline, the second replaces it
        body = {"model": MODEL, "reference": ref}
        r = cp.call("POST", "/api/v1/drift/reference", "operator", json=body)
        assert r.status_code == 200, r.text
        schemas.append(r.json()["schema"])
        ref = build_reference({"x0": [float(i) * 2 for i in range(100)], "x1": [1.0] * 100})
    second, first = cp.entries(MODEL, "drift.reference.set")  # newest first
    assert first["detail"]["before"] is None
    assert first["detail"]["after"]["schema"] == schemas[0]
    assert second["detail"]["before"] == first["detail"]["after"]
    assert second["detail"]["after"]["schema"] == schemas[1] != schemas[0]


def test_device_revocation_records_active_before_and_revoked_after(cp: CP, tmp_path: Path) -> None:
    device = f"gw-{uuid.uuid4().hex[:8]}"
    r = cp.call("POST", "/api/v1/enrollment/tokens", "admin", json={"device_id": device})
    assert r.status_code == 200, r.text
    enroll(cp.proc.url, r.json()["token"], device, tmp_path / "gw")
    revoke = f"/api/v1/enrollment/devices/{device}/revoke"
    assert cp.call("POST", revoke, "admin", json={"reason": "stolen"}).status_code == 200
    (entry,) = cp.entries(device, "device.revoke")
    assert entry["actor"] == "apikey:root"
    assert entry["detail"]["before"] == {"active": True, "revoked_at": None, "reason": None}
    after = entry["detail"]["after"]
    assert after["active"] is False and after["reason"] == "stolen" and after["revoked_at"]


def test_api_key_create_and_revoke_record_the_key_state(cp: CP) -> None:
    name = f"temp-{uuid.uuid4().hex[:6]}"
    r = cp.call("POST", "/api/v1/security/keys", "admin", json={"name": name, "role": "viewer"})
    assert r.status_code == 200, r.text
    assert cp.call("DELETE", f"/api/v1/security/keys/{name}", "admin").status_code == 200
    revoked, created = cp.entries(name)
    assert created["action"] == "apikey.create" and created["detail"]["before"] is None
    assert created["detail"]["after"]["role"] == "viewer"
    assert not created["detail"]["after"]["revoked"]
    assert revoked["action"] == "apikey.revoke"
    assert (revoked["detail"]["before"]["revoked"], revoked["detail"]["after"]["revoked"]) == (
        False, True,
    )  # fmt: skip
    assert r.json()["key"] not in json.dumps([revoked, created])  # never the secret


def test_farm_erasure_needs_admin_in_the_policy(cp: CP) -> None:
    assert required_role("DELETE", "/api/v1/farms/farm-x") is Role.ADMIN
    assert required_role("GET", "/api/v1/farms/farm-x/export") is Role.VIEWER
    r = cp.call("DELETE", "/api/v1/farms/farm-x", "operator", params={"confirm": "farm-x"})
    assert r.status_code == 403 and "admin" in r.text, r.text


def test_actuator_command_and_deployment_record_what_they_changed(
    cp: CP, versions: list[int]
) -> None:
    device = f"gw-{uuid.uuid4().hex[:8]}"
    for value in (0.2, 1.0):
        body = {"device_id": device, "actuator": "heater", "value": value}
        r = cp.call("POST", "/api/v1/actuators", "operator", json=body)
        assert r.status_code == 200, r.text
    second, first = cp.entries(device, "actuator.command")
    assert first["detail"]["before"] == {"heater": None}
    assert first["detail"]["after"]["heater"]["value"] == 0.2
    assert second["detail"]["before"]["heater"]["value"] == 0.2
    assert second["detail"]["after"]["heater"]["value"] == 1.0
    body = {"model": MODEL, "version": versions[0], "devices": [device]}
    r = cp.call("POST", "/api/v1/deployments", "operator", json=body)
    assert r.status_code == 200, r.text
    (dep,) = cp.entries(r.json()["id"], "deployment.create")
    assert dep["detail"]["before"] is None
    assert dep["detail"]["after"]["devices"] == {device: "sent"}
    assert dep["detail"]["after"]["bundle_id"] == r.json()["bundle_id"]


# Routes that change state but keep only the call's entry (say why), or that write their
# own semantic entry. A new state-changing route must land in one of these or declare
# ``@audits``: this test fails until someone decides.
CALL_ENTRY_ONLY = {
    ("POST", "/api/v1/cloud/models/{name}/warmup"): "no state: zero inputs through Triton",
    ("POST", "/api/v1/detect/check"): "a computation, nothing changes",
    ("POST", "/api/v1/detect/comprehensive"): "a computation, nothing changes",
    ("POST", "/api/v1/retraining/decision"): "stores an evaluation, changes no model",
    ("POST", "/api/v1/features/serving"): "a read with a body",
    ("POST", "/api/v1/features/materialize"): "online store refresh from the offline store",
    ("POST", "/api/v1/features/readings"): "appends data",
    ("POST", "/api/v1/features/records/{view}"): "appends data",
    ("POST", "/api/v1/features/publish/{gateway_id}"): "re-sends signed features",
}
OWN_ENTRY = {
    ("DELETE", "/api/v1/farms/{farm}"): "farm.erase",
    ("POST", "/api/v1/enrollment/tokens"): "enrollment.token.create",
    ("POST", "/api/v1/enrollment/enroll"): "enrollment.enrolled",
}


def test_every_state_changing_route_declares_what_it_audits() -> None:
    import importlib

    from fastapi.routing import APIRoute

    from control_plane.app import ROUTER_MODULES
    from control_plane.security.audit_trail import declared_action

    undecided = []
    declared = set()
    for name in [*ROUTER_MODULES, "control_plane.security.keys_api"]:
        for route in importlib.import_module(name).router.routes:
            if not isinstance(route, APIRoute):
                continue
            for method in (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}:
                key = (method, route.path)
                if declared_action(route.endpoint):
                    declared.add(declared_action(route.endpoint))
                elif key not in CALL_ENTRY_ONLY and key not in OWN_ENTRY:
                    undecided.append(key)
    assert not undecided, undecided
    assert {"model.promote", "rollout.pause", "device.revoke", "apikey.create"} <= declared
    assert {"bundle.build", "cloud.publish", "drift.reference.set"} <= declared
