"""A control plane with a fleet (``farmiq provision init-fleet``) and enrollment: a revoked
gateway never gets a rollout's desired state nor a byte of its bundle, while enrolled and
never-enrolled gateways get it as usual."""

from __future__ import annotations

import time
import uuid

import orjson

from farmiq import topics
from farmiq.cli import main as farmiq_main
from provisioning.enroll_client import enroll
from tests.rollout.conftest import (
    MODEL,
    register_versions,
    start_cp,
    wait_devices_known,
    wait_rollout,
)


def test_revoked_gateway_gets_no_desired_state_and_no_chunks(tmp_path, mqtt_port, fleet_factory):
    fleet_dir = tmp_path / "fleet"
    assert farmiq_main(["provision", "init-fleet", "--dir", str(fleet_dir)]) == 0
    cp = start_cp(tmp_path / "cp", mqtt_port, fleet_dir=str(fleet_dir))
    try:
        v1, v2 = register_versions(cp, 2)
        tag = f"rv{uuid.uuid4().hex[:6]}"
        fleet = fleet_factory(cp, gateways=4, prefix=tag, tags=[tag], initial_version=v1)
        wait_devices_known(cp, tag, 4)
        active, revoked, *never_enrolled = [g.device_id for g in fleet.fleet.gateways]
        with cp.client() as c:
            for dev in (active, revoked):
                r = c.post("/api/v1/enrollment/tokens", json={"device_id": dev, "ttl_s": 600})
                assert r.status_code == 200, r.text
                enroll(cp.url, r.json()["token"], dev, tmp_path / dev)
            r = c.post(f"/api/v1/enrollment/devices/{revoked}/revoke", json={"reason": "stolen"})
            assert r.status_code == 200, r.text
            r = c.post(
                "/api/v1/rollouts",
                json={
                    "model": MODEL,
                    "version": v2,
                    "targeting": {"tags": [tag]},
                    "waves": [{"percent": 100}],
                    "soak_s": 0.2,
                    "gates": {"min_install_success": 0.95},
                },
            )
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
            done = wait_rollout(cp, rid, lambda d: d["status"] in ("succeeded", "paused"))
            assert done["status"] == "succeeded", done
            rows = {
                d["device_id"]: d
                for d in c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
            }
            assert (rows[revoked]["status"], rows[revoked]["code"]) == ("skipped", "revoked")
            assert rows[revoked]["sends"] == 0
            assert all(rows[d]["status"] == "installed" for d in [active, *never_enrolled])
            assert not (c.get(f"/api/v1/devices/{revoked}").json().get("desired") or {}).get(
                "models"
            )
        versions = {g.device_id: g.models[MODEL][0] for g in fleet.fleet.gateways}
        assert versions == {revoked: v1, active: v2, **{d: v2 for d in never_enrolled}}

        # even asking for the bundle directly (it knows the id from a neighbour) gets nothing
        bundle_id = done["bundle_id"]
        gw = fleet.gateway(revoked)
        before = gw.receiver.bytes_received

        async def ask() -> None:
            gw.client.publish(
                topics.up(revoked, topics.TRANSFER),
                orjson.dumps({"bundle_id": bundle_id, "chunks": [0, 1], "state": "fetching"}),
                qos=1,
            )

        fleet.call(ask())
        time.sleep(1.5)
        assert gw.receiver.bytes_received == before
        assert "revoked device" in cp.log_text()
    finally:
        cp.stop()
