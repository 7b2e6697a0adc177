"""Per-gateway ACLs, client-certificate auth and revocation on a real mosquitto."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from farmiq import topics
from provisioning.certificate_authority import CertificateAuthority, RevokedCert, create_ca
from provisioning.fleet import FleetPaths
from provisioning.keyfiles import new_ec_key, write_cert, write_private_key
from provisioning.mosquitto_config import write_acl
from tests.security.conftest import Broker, Identity, connect, make_identity, wait_for


@pytest.fixture(scope="module")
def ids(fleet: FleetPaths, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    d = tmp_path_factory.mktemp("ids")
    out = {n: make_identity(fleet, d, n) for n in ("gw-a", "gw-b", "gw-r")}
    out["cp"] = Identity("farmiq-control-plane", fleet.cp_cert, fleet.cp_key)
    return out


def test_gateway_confined_to_its_own_topics(
    broker: Broker, fleet: FleetPaths, ids: dict[str, Identity]
) -> None:
    a = connect(broker.port, fleet.ca_cert, ids["gw-a"], "gw-a")
    b = connect(broker.port, fleet.ca_cert, ids["gw-b"], "gw-b")
    cp = connect(broker.port, fleet.ca_cert, ids["cp"], "cp")
    try:
        assert a.connected and b.connected and cp.connected
        # A tries to listen to every gateway's commands, and B's explicitly.
        a.client.subscribe("farmiq/v1/gw/+/down/#", qos=1)
        a.client.subscribe(topics.down("gw-b", "#"), qos=1)
        cp.client.subscribe("farmiq/#", qos=1)
        time.sleep(0.3)
        cp.client.publish(topics.down("gw-b", topics.BUNDLE), b"for-b", qos=1)
        cp.client.publish(topics.down("gw-a", topics.BUNDLE), b"for-a", qos=1)
        # A forges B's telemetry, then sends its own.
        a.client.publish(topics.up("gw-b", topics.STATE), b"forged-by-a", qos=1)
        a.client.publish(topics.up("gw-a", topics.STATE), b"a-state", qos=1)
        assert wait_for(lambda: (topics.up("gw-a", topics.STATE), b"a-state") in cp.messages())
        assert wait_for(lambda: (topics.down("gw-a", topics.BUNDLE), b"for-a") in a.messages())
        time.sleep(0.3)
        assert [m for m in a.messages() if m[1] == b"for-b"] == [], "A read B's commands"
        assert [m for m in cp.messages() if m[1] == b"forged-by-a"] == [], "A wrote B's telemetry"
        # A cannot publish commands to itself either (down is control-plane only).
        a.client.publish(topics.down("gw-a", topics.ACTUATOR), b"self-command", qos=1)
        time.sleep(0.3)
        assert [m for m in cp.messages() if m[1] == b"self-command"] == []
    finally:
        for c in (a, b, cp):
            c.close()


def test_client_without_certificate_gets_no_connack(broker: Broker, fleet: FleetPaths) -> None:
    anon = connect(broker.port, fleet.ca_cert, None, "anon", timeout=2.0)
    assert not anon.connected


def test_certificate_from_another_ca_is_refused(
    broker: Broker, fleet: FleetPaths, tmp_path: Path
) -> None:
    rogue_key = new_ec_key()
    rogue = CertificateAuthority(rogue_key, create_ca(rogue_key, "rogue CA"))
    key = new_ec_key()
    # Claims to be the control plane, signed by the attacker's own CA.
    write_private_key(tmp_path / "x.key", key)
    write_cert(tmp_path / "x.crt", rogue.issue(key.public_key(), "farmiq-control-plane"))
    c = connect(
        broker.port,
        fleet.ca_cert,
        Identity("x", tmp_path / "x.crt", tmp_path / "x.key"),
        "x",
        timeout=2.0,
    )
    assert not c.connected


def test_revoked_gateway_loses_access_now_and_cannot_reconnect(
    broker: Broker, fleet: FleetPaths, ids: dict[str, Identity]
) -> None:
    r = connect(broker.port, fleet.ca_cert, ids["gw-r"], "gw-r")
    cp = connect(broker.port, fleet.ca_cert, ids["cp"], "cp2")
    try:
        assert r.connected and cp.connected
        r.client.subscribe(topics.down("gw-r", "#"), qos=1)
        cp.client.subscribe(topics.up("gw-r", "#"), qos=1)
        time.sleep(0.2)
        cp.client.publish(topics.down("gw-r", topics.DESIRED), b"before", qos=1)
        assert wait_for(lambda: any(p == b"before" for _, p in r.messages()))
        # Revoke the way EnrollmentService.publish_revocations does: CRL + ACL + reload.
        fleet.ca().write_crl(fleet.crl, [RevokedCert(ids["gw-r"].serial, dt.datetime.now(dt.UTC))])
        write_acl(broker.config.acl, ["gw-r"])
        broker.reload()
        cp.client.publish(topics.down("gw-r", topics.DESIRED), b"after", qos=1)
        r.client.publish(topics.up("gw-r", topics.STATE), b"from-revoked", qos=1)
        time.sleep(0.5)
        assert not any(p == b"after" for _, p in r.messages()), "revoked gateway still reads"
        assert not any(p == b"from-revoked" for _, p in cp.messages()), (
            "revoked gateway still writes"
        )
        again = connect(broker.port, fleet.ca_cert, ids["gw-r"], "gw-r-again", timeout=2.0)
        assert not again.connected, "revoked certificate accepted on reconnect"
        # Other gateways are unaffected by the reload.
        a = connect(broker.port, fleet.ca_cert, ids["gw-a"], "gw-a-after")
        assert a.connected
        a.close()
    finally:
        r.close()
        cp.close()
        write_acl(broker.config.acl, [])
        fleet.ca().write_crl(fleet.crl, [])
        broker.reload()


def test_gateway_cannot_take_another_gateways_client_id(
    broker: Broker, fleet: FleetPaths, ids: dict[str, Identity]
) -> None:
    a = connect(broker.port, fleet.ca_cert, ids["gw-a"], "farmiq-agent-gw-a")
    cp = connect(broker.port, fleet.ca_cert, ids["cp"], "cp-clientid")
    drops: list[object] = []
    a.client.on_disconnect = lambda *args: drops.append(args)
    try:
        assert a.connected and cp.connected
        a.client.subscribe(topics.down("gw-a", "#"), qos=1)
        time.sleep(0.2)
        # B presents A's predictable client id: without use_username_as_clientid the broker
        # hands B the session and disconnects A, every time B (re)connects.
        b = connect(broker.port, fleet.ca_cert, ids["gw-b"], "farmiq-agent-gw-a")
        try:
            assert b.connected
            time.sleep(0.5)
            cp.client.publish(topics.down("gw-a", topics.BUNDLE), b"still-a", qos=1)
            assert wait_for(lambda: any(p == b"still-a" for _, p in a.messages()))
            assert drops == [], "gateway A was knocked offline by B's client id"
        finally:
            b.close()
    finally:
        a.close()
        cp.close()


def test_api_revocation_cuts_the_live_broker_session(
    broker: Broker, fleet: FleetPaths, ids: dict[str, Identity], tmp_path: Path, mqtt_port: int
) -> None:
    import httpx

    from provisioning.enroll_client import enroll
    from tests.support.procs import ControlPlaneProc

    cp_proc = ControlPlaneProc(
        tmp_path / "cp", mqtt_port, auth_enabled=True, fleet_dir=str(fleet.root),
        broker_acl=str(broker.config.acl),
        broker_reload_cmd=["kill", "-HUP", str(broker.proc.pid)],
    )  # fmt: skip
    cp_proc.start()
    key = {"Authorization": f"Bearer {cp_proc.api_key()}"}
    device = "gw-live-revoke"
    watcher = None
    gw = None
    try:
        r = httpx.post(
            cp_proc.url + "/api/v1/enrollment/tokens", headers=key,
            json={"device_id": device, "ttl_s": 600}, timeout=60,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        files = enroll(cp_proc.url, r.json()["token"], device, tmp_path / "gw")
        gw = connect(broker.port, fleet.ca_cert, Identity(device, files.cert, files.key), device)
        watcher = connect(broker.port, fleet.ca_cert, ids["cp"], "cp-watch")
        assert gw.connected and watcher.connected
        gw.client.subscribe(topics.down(device, "#"), qos=1)
        watcher.client.subscribe(topics.up(device, "#"), qos=1)
        time.sleep(0.2)
        watcher.client.publish(topics.down(device, topics.BUNDLE), b"before", qos=1)
        assert wait_for(lambda: any(p == b"before" for _, p in gw.messages()))
        r = httpx.post(
            cp_proc.url + f"/api/v1/enrollment/devices/{device}/revoke", headers=key,
            json={"reason": "stolen"}, timeout=60,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        time.sleep(0.5)  # the SIGHUP the control plane sent is applied
        watcher.client.publish(topics.down(device, topics.BUNDLE), b"after", qos=1)
        gw.client.publish(topics.up(device, topics.STATE), b"from-revoked", qos=1)
        time.sleep(0.5)
        assert not any(p == b"after" for _, p in gw.messages()), "revoked session still reads"
        assert not any(p == b"from-revoked" for _, p in watcher.messages()), "still writes"
        again = connect(
            broker.port, fleet.ca_cert, Identity(device, files.cert, files.key), "again",
            timeout=2.0,
        )  # fmt: skip
        assert not again.connected, "revoked certificate accepted on reconnect"
        audit = httpx.get(
            cp_proc.url + "/api/v1/audit", headers=key, params={"target": device}, timeout=60
        ).json()
        assert any(e["action"] == "device.revoke" for e in audit), audit
    finally:
        for c in (gw, watcher):
            if c is not None:
                c.close()
        cp_proc.stop()
        write_acl(broker.config.acl, [])
        fleet.ca().write_crl(fleet.crl, [])
        broker.reload()
