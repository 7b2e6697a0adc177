"""With a fleet directory, the control plane signs with the fleet's TUF targets keys and
serves the fleet's signed root; a gateway holding that root installs its bundles."""

from __future__ import annotations

import json
import time

from provisioning.fleet import init_fleet
from tests.support.procs import ControlPlaneProc


def test_control_plane_signs_with_fleet_keys(
    tmp_path, mqtt_port, agent_factory, device_id, barn_model
):
    fleet = init_fleet(tmp_path / "fleet", root_threshold=1, root_keys=1)
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port, fleet_dir=str(fleet.root))
    cp.start()
    try:
        served = cp.client().get("/api/v1/trust-root").content
        assert served == fleet.root_json.read_bytes()  # the signed TUF root, byte for byte
        agent = agent_factory(device_id, fleet.root_json)
        with cp.client() as c:
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": "fleet-model", "meta": json.dumps({})},
            )
            assert r.status_code == 200, r.text
            c.put("/api/v1/models/fleet-model/promote", json={"version": 1}).raise_for_status()
            dep = c.post(
                "/api/v1/deployments", json={"model": "fleet-model", "devices": [device_id]}
            ).json()
            deadline = time.time() + 30
            status = "sent"
            while status == "sent" and time.time() < deadline:
                status = c.get(f"/api/v1/deployments/{dep['id']}").json()["devices"][device_id][
                    "status"
                ]
                time.sleep(0.2)
        assert status == "installed", agent.get("/api/v1/status").json()["last_install"]
    finally:
        cp.stop()
