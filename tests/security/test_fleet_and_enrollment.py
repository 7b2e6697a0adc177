"""init-fleet trust roots, one-time enrollment over real HTTP, and revocation."""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from tuf.api.metadata import Metadata, Root

from control_plane.api import audit as audit_api
from control_plane.api import enrollment as enrollment_api
from control_plane.security import install_security, query_audit
from farmiq.cli import main as farmiq_main
from provisioning.device_registry import DeviceRegistry, EnrollmentError
from provisioning.enroll_client import EnrollFailed, enroll, make_key_and_csr
from provisioning.enrollment import BrokerEndpoint, EnrollmentService
from provisioning.fleet import FleetPaths, init_fleet
from tests.security.conftest import free_port


def test_init_fleet_keys_are_private_and_root_needs_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    d = tmp_path / "fleet"
    assert (
        farmiq_main(
            [
                "provision",
                "init-fleet",
                "--dir",
                str(d),
                "--root-threshold",
                "2",
                "--root-keys",
                "3",
            ]
        )
        == 0
    )
    paths = FleetPaths(d)
    keys = list(d.rglob("*.key"))
    # root x3, targets, ca/snapshot/timestamp/director/client, broker, and one broker
    # identity per control-plane replica (client-1, client-2)
    assert len(keys) == 3 + 1 + 6 + 2
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k
    out = capsys.readouterr().out + caplog.text
    for k in keys:  # no private key material on the console or in the log
        body = k.read_text().splitlines()[1]
        assert body not in out
    md = Metadata[Root].from_file(str(paths.root_json))
    root = md.signed
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 3
    root.verify_delegate("root", md.signed_bytes, md.signatures)
    # One signature short of the threshold is not a valid root.
    one = dict(list(md.signatures.items())[:1])
    with pytest.raises(Exception, match="signed by 1/2 keys"):
        root.verify_delegate("root", md.signed_bytes, one)
    # A second init over the same directory must not replace the keys.
    assert_raises = pytest.raises(FileExistsError)
    with assert_raises:
        init_fleet(d)


@pytest.fixture()
def service(fleet: FleetPaths, tmp_path: Path) -> EnrollmentService:
    registry = DeviceRegistry(sa.create_engine(f"sqlite:///{tmp_path}/devices.sqlite"))
    return EnrollmentService(
        fleet.root,
        registry,
        broker=BrokerEndpoint("127.0.0.1", 8883),
        acl_path=tmp_path / "broker.acl",
    )


def test_token_is_one_time_bound_and_expiring(service: EnrollmentService) -> None:
    _, csr = make_key_and_csr("gw-1")
    token = service.issue_token("gw-1", hardware_class="rpi4")
    with pytest.raises(EnrollmentError):
        service.enroll(token, "gw-2", csr.decode())  # bound to gw-1
    result = service.enroll(token, "gw-1", csr.decode())
    assert result.hardware_class == "rpi4"
    with pytest.raises(EnrollmentError):
        service.enroll(token, "gw-1", csr.decode())  # used
    short = service.issue_token("gw-3", ttl_s=0.05)
    time.sleep(0.1)
    _, csr3 = make_key_and_csr("gw-3")
    with pytest.raises(EnrollmentError):
        service.enroll(short, "gw-3", csr3.decode())  # expired
    with pytest.raises(ValueError):
        service.issue_token("farmiq-control-plane")  # would get full broker access
    with pytest.raises(ValueError):
        service.issue_token("gw/+/#")  # would escape the ACL pattern


def test_certificate_cn_is_the_enrolled_id_not_the_csr_subject(service: EnrollmentService) -> None:
    # The gateway asks for the control plane's name; the CA writes its enrolled id instead.
    _, csr = make_key_and_csr("farmiq-control-plane")
    token = service.issue_token("gw-honest")
    result = service.enroll(token, "gw-honest", csr.decode())
    cert = x509.load_pem_x509_certificate(result.certificate_pem.encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-honest"
    ca = x509.load_pem_x509_certificate(result.ca_pem.encode())
    cert.verify_directly_issued_by(ca)


def test_revocation_updates_crl_acl_and_blocks_re_enrollment(
    service: EnrollmentService, fleet: FleetPaths
) -> None:
    _, csr = make_key_and_csr("gw-bad")
    result = service.enroll(service.issue_token("gw-bad"), "gw-bad", csr.decode())
    spare = service.issue_token("gw-bad")
    serial = x509.load_pem_x509_certificate(result.certificate_pem.encode()).serial_number
    assert service.is_active("gw-bad")
    service.revoke("gw-bad", "stolen from barn 3")
    assert not service.is_active("gw-bad")
    crl = x509.load_pem_x509_crl(fleet.crl.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert "user gw-bad\ntopic deny #" in (service.acl_path or Path()).read_text()
    with pytest.raises(EnrollmentError):
        service.enroll(spare, "gw-bad", csr.decode())
    fleet.ca().write_crl(fleet.crl, [])  # the module-scoped fleet is shared


@pytest.fixture()
def server(service: EnrollmentService, tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    app = FastAPI()
    security = install_security(app, sa.create_engine(f"sqlite:///{tmp_path}/cp.sqlite"))
    enrollment_api.install_enrollment(app, service)
    app.include_router(enrollment_api.router)
    app.include_router(audit_api.router)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    app.state.admin_key = security.keys.create("root-admin", "admin")
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(5)


def test_gateway_enrolls_over_http_and_gets_a_working_config(
    server: tuple[str, FastAPI], tmp_path: Path
) -> None:
    import httpx

    from edge_agent.config import load_agent_config

    url, app = server
    admin = {"Authorization": f"Bearer {app.state.admin_key}"}
    r = httpx.post(
        f"{url}/api/v1/enrollment/tokens",
        json={"device_id": "barn-7", "hardware_class": "rpi4"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    files = enroll(url, token, "barn-7", tmp_path / "gw")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cfg = load_agent_config(files.config)
    assert cfg.device_id == "barn-7" and cfg.hardware_class == "rpi4"
    assert cfg.mqtt.tls_cert == files.cert and cfg.mqtt.port == 8883
    assert cfg.trust_root == files.root
    Metadata[Root].from_file(str(files.root))  # the fleet's TUF root
    with pytest.raises(EnrollFailed, match="403"):
        enroll(url, token, "barn-7", tmp_path / "gw2")  # replayed token
    assert not (tmp_path / "gw2").exists()  # nothing written on refusal
    # Every step is in the audit log, with where it came from.
    r = httpx.get(f"{url}/api/v1/audit", headers=admin)
    actions = [(e["action"], e["target"], e["source_ip"]) for e in r.json()]
    assert ("enrollment.enrolled", "barn-7", "127.0.0.1") in actions
    assert ("enrollment.refused", "barn-7", "127.0.0.1") in actions
    assert ("enrollment.token.create", "barn-7", "127.0.0.1") in actions
    r = httpx.post(
        f"{url}/api/v1/enrollment/devices/barn-7/revoke", json={"reason": "test"}, headers=admin
    )
    assert r.status_code == 200
    entries = query_audit(app.state.security.engine, action="device.revoke")
    assert entries[0].actor == "apikey:root-admin"
    assert entries[0].detail["before"]["active"] is True
    assert entries[0].detail["after"]["active"] is False
    assert entries[0].detail["after"]["reason"] == "test"
    devices = httpx.get(f"{url}/api/v1/enrollment/devices", headers=admin).json()
    assert devices == [d for d in devices if d["device_id"] != "barn-7"] + [
        d for d in devices if d["device_id"] == "barn-7" and not d["active"]
    ]
