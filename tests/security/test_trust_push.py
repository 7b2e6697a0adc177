"""Root rotations reach gateways by themselves (control_plane/trust_push.py): a real
control plane with the fleet directory, a real agent holding root v1, and two rotations of
the bundle-signing key done while the gateway was away (roots v2 and v3, each signed by
the offline root keys). When the gateway reports its root, the control plane sends v2;
when the gateway answers that it holds v2, v3. Afterwards a bundle signed with the newest
key installs and one signed with the retired key is refused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from control_plane.signing.rotation import write_targets_root
from farmiq import topics
from farmiq.bundle.signing import Signer
from provisioning.fleet import init_fleet
from tests.security.helpers import Listener, regression_bundle
from tests.support.mqtt import wait_until
from tests.support.procs import AgentProc, ControlPlaneProc


def test_a_gateway_that_missed_two_rotations_is_walked_up_the_chain(
    tmp_path: Path, mqtt_port: int
) -> None:
    fleet = init_fleet(tmp_path / "fleet", root_threshold=1, root_keys=1)
    retired = Signer.load(fleet.targets_key(1))
    cp = ControlPlaneProc(
        tmp_path / "cp", mqtt_port, fleet_dir=str(fleet.root),
        signing_keys=[str(fleet.targets_key(1))],
    )  # fmt: skip
    cp.start()
    device = f"gw-trust-{uuid.uuid4().hex[:8]}"
    agent = AgentProc(tmp_path / device, device, mqtt_port, fleet.root_json)
    listener = Listener(mqtt_port, [topics.up(device, "#")])
    try:
        # two rotations while the gateway is away: v2 lists key a, v3 lists key b
        key_a, key_b = Signer.generate(), Signer.generate()
        write_targets_root(fleet, [key_a], 1)  # type: ignore[list-item]
        write_targets_root(fleet, [key_b], 1)  # type: ignore[list-item]
        assert json.loads(fleet.root_json.read_text())["signed"]["version"] == 3

        agent.start()
        trust = topics.up(device, topics.TRUST)
        wait_until(lambda: len(listener.on(trust)) >= 2, 30, "two root rotations")
        answers = [json.loads(p) for p in listener.on(trust)]
        assert [(a["ok"], a["version"]) for a in answers[:2]] == [(True, 2), (True, 3)], answers
        held = json.loads((agent.workdir / "trust_root.json").read_text())
        assert held["signed"]["version"] == 3  # written before it was used
        state = agent.get("/api/v1/status").json()["state"]
        assert state["trust_root_version"] == 3

        install = topics.up(device, topics.INSTALL_ACK)
        seen = len(listener.on(install))
        listener.publish(topics.down(device, topics.BUNDLE), regression_bundle([retired], 1))
        refused = json.loads(listener.wait_new(install, seen))
        assert not refused["ok"] and refused["code"] in ("untrusted-key", "signature"), refused
        listener.publish(topics.down(device, topics.BUNDLE), regression_bundle([key_b], 1))
        ok = json.loads(listener.wait_new(install, seen + 1))
        assert ok["ok"] and ok["version"] == 1, ok
    finally:
        listener.publish(topics.down(device, topics.TRUST), b"", retain=True)
        listener.close()
        agent.stop()
        cp.stop()
