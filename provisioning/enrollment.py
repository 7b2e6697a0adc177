"""Control-plane side of enrollment and revocation.

``EnrollmentService.enroll`` spends a one-time token, signs the gateway's CSR with the fleet
CA (CN forced to the device id), and returns everything the gateway needs: its certificate,
the CA certificate, the TUF trust root (root.json), its broker settings and an agent config.
``revoke`` marks the device revoked, rewrites the CRL and the broker ACL, and asks the broker
to reload, so the gateway loses broker access at once; rollouts consult ``is_active``.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from provisioning.device_registry import (
    DeviceRegistry,
    EnrollmentError,
    validate_device_id,
)
from provisioning.enroll_client import FILES
from provisioning.fleet import FleetPaths
from provisioning.mosquitto_config import write_acl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str = "127.0.0.1"
    port: int = 8883


@dataclass(frozen=True)
class EnrollmentResult:
    device_id: str
    hardware_class: str
    certificate_pem: str
    ca_pem: str
    root_json: str
    broker: dict[str, object]
    agent_config_toml: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def agent_config_toml(
    device_id: str, hardware_class: str, broker: BrokerEndpoint, files_dir: str, state_dir: str
) -> str:
    """An agent.toml matching ``edge_agent.config.AgentConfig``."""
    d = files_dir.rstrip("/")
    return (
        "# Written by `farmiq provision enroll`.\n"
        f"device_id = {_toml_str(device_id)}\n"
        f"hardware_class = {_toml_str(hardware_class)}\n"
        f"state_dir = {_toml_str(state_dir)}\n"
        f"trust_root = {_toml_str(d + '/' + FILES['root'])}\n"
        "\n[mqtt]\n"
        f"host = {_toml_str(broker.host)}\n"
        f"port = {broker.port}\n"
        f"tls_ca = {_toml_str(d + '/' + FILES['ca'])}\n"
        f"tls_cert = {_toml_str(d + '/' + FILES['cert'])}\n"
        f"tls_key = {_toml_str(d + '/' + FILES['key'])}\n"
    )


def reload_command(argv: list[str]) -> Callable[[], None]:
    """A broker reloader that runs e.g. ``["systemctl", "reload", "mosquitto"]``."""

    def _run() -> None:
        subprocess.run(argv, check=True, timeout=30)

    return _run


class EnrollmentService:
    def __init__(
        self,
        fleet_dir: Path,
        registry: DeviceRegistry,
        *,
        broker: BrokerEndpoint = BrokerEndpoint(),
        acl_path: Path | None = None,
        reload_broker: Callable[[], None] | None = None,
        cert_days: int = 365,
    ) -> None:
        self.paths = FleetPaths(Path(fleet_dir))
        self.registry = registry
        self.broker = broker
        self.acl_path = acl_path
        self.reload_broker = reload_broker
        self.cert_days = cert_days

    def issue_token(
        self,
        device_id: str,
        *,
        hardware_class: str = "generic-linux",
        ttl_s: float = 86400,
        created_by: str = "",
    ) -> str:
        return self.registry.create_token(
            device_id,
            hardware_class=hardware_class,
            ttl=dt.timedelta(seconds=ttl_s),
            created_by=created_by,
        )

    def enroll(
        self,
        token: str,
        device_id: str,
        csr_pem: str,
        *,
        gateway_dir: str = "/etc/farmiq",
        state_dir: str = "/var/lib/farmiq",
    ) -> EnrollmentResult:
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            raise EnrollmentError(str(exc)) from None
        grant = self.registry.consume_token(token, device_id)
        ca = self.paths.ca()
        try:
            cert = ca.sign_csr(csr_pem.encode(), grant.device_id, days=self.cert_days)
        except ValueError as exc:
            raise EnrollmentError(str(exc)) from None
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        self.registry.record_certificate(
            grant.device_id,
            grant.hardware_class,
            cert.serial_number,
            cert.not_valid_after_utc,
            cert_pem,
        )
        log.info(
            "enrolled device %s (class %s, cert serial %x)",
            grant.device_id,
            grant.hardware_class,
            cert.serial_number,
        )
        return EnrollmentResult(
            device_id=grant.device_id,
            hardware_class=grant.hardware_class,
            certificate_pem=cert_pem,
            ca_pem=ca.cert_pem.decode(),
            root_json=self.paths.root_json.read_text(),
            broker={
                "host": self.broker.host,
                "port": self.broker.port,
                "username": grant.device_id,
                "tls": True,
            },
            agent_config_toml=agent_config_toml(
                grant.device_id, grant.hardware_class, self.broker, gateway_dir, state_dir
            ),
        )

    def revoke(self, device_id: str, reason: str = "") -> None:
        """Revoke: registry, CRL, broker ACL, broker reload (in that order)."""
        self.registry.revoke(device_id, reason)
        self.publish_revocations()
        log.warning("revoked device %s: %s", device_id, reason or "no reason given")

    def publish_revocations(self) -> None:
        ca = self.paths.ca()
        ca.write_crl(self.paths.crl, self.registry.revoked_certificates())
        if self.acl_path is not None:
            write_acl(self.acl_path, self.registry.revoked_device_ids())
        if self.reload_broker is not None:
            self.reload_broker()

    def is_active(self, device_id: str) -> bool:
        return self.registry.is_active(device_id)

    def is_revoked(self, device_id: str) -> bool:
        return self.registry.is_revoked(device_id)
