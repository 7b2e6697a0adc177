"""Wiring of operator-API security and enrollment into the control plane.

``install(app, settings)`` runs in the app factory (before the app starts: middleware can
only be added then): the ``SecurityMiddleware`` gate in front of every router and the
API-key administration router. ``setup(ctx)`` runs at start-up with the other areas'
hooks: it creates the security tables and service, and, when ``settings.fleet_dir`` is
set, the enrollment service, whose revocation list then gates every deployment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI

from control_plane.security.api_keys import ApiKeyStore
from control_plane.security.audit_log import create_audit_table
from control_plane.security.dependencies import SecurityService
from control_plane.security.keys_api import router as keys_router
from control_plane.security.middleware import SecurityMiddleware
from control_plane.security.throttle import FailedAuthThrottle

if TYPE_CHECKING:
    from control_plane.context import ControlPlaneContext
    from control_plane.settings import ControlPlaneSettings

log = logging.getLogger(__name__)

MQTT_TLS_PORT = 8883


def install(app: FastAPI, settings: ControlPlaneSettings) -> None:
    app.add_middleware(SecurityMiddleware, enabled=settings.auth_enabled)
    app.include_router(keys_router)


def setup(ctx: ControlPlaneContext) -> None:
    settings = ctx.settings
    create_audit_table(ctx.engine)
    ctx.services["security"] = SecurityService(
        engine=ctx.engine,
        keys=ApiKeyStore(ctx.engine),
        throttle=FailedAuthThrottle(
            max_failures=settings.auth_max_failures, lockout_s=settings.auth_lockout_s
        ),
        enabled=settings.auth_enabled,
    )
    if not settings.auth_enabled:
        log.warning("operator API authentication is OFF (auth_enabled = false): demo mode only")
    if settings.fleet_dir is not None:
        setup_enrollment(ctx)


def setup_enrollment(ctx: ControlPlaneContext) -> None:
    from provisioning.device_registry import DeviceRegistry
    from provisioning.enrollment import BrokerEndpoint, EnrollmentService, reload_command
    from provisioning.fleet import FleetPaths

    fleet_dir = ctx.settings.fleet_dir
    assert fleet_dir is not None
    paths = FleetPaths(fleet_dir)
    if not paths.root_json.exists():
        raise RuntimeError(f"fleet_dir {fleet_dir} holds no fleet (farmiq provision init-fleet)")
    host = ctx.settings.mqtt.host
    if paths.summary.exists():  # the broker name gateways reach, as given to init-fleet
        hosts = json.loads(paths.summary.read_text()).get("broker_hosts") or [host]
        host = str(hosts[0])
    settings = ctx.settings
    service = EnrollmentService(
        fleet_dir,
        DeviceRegistry(ctx.engine),
        broker=BrokerEndpoint(host, MQTT_TLS_PORT),
        acl_path=settings.broker_acl,
        reload_broker=_logged(reload_command(settings.broker_reload_cmd))
        if settings.broker_reload_cmd
        else None,
    )
    if settings.broker_acl is None or not settings.broker_reload_cmd:
        log.warning(
            "broker_acl / broker_reload_cmd not set: an API revocation stops bundles and "
            "new connections (CRL) but leaves a revoked device's live broker session open"
        )
    ctx.services["enrollment"] = service
    # A revoked device never gets a bundle: DeploymentService.deploy consults this.
    ctx.deployments.is_revoked = service.is_revoked
    log.info("enrollment enabled for fleet %s", fleet_dir)


def _logged(reload: Callable[[], None]) -> Callable[[], None]:
    """A failed broker reload must not undo (or 500) a revocation already recorded: it is
    logged loudly; the CRL still refuses the device's next connection."""

    def _run() -> None:
        try:
            reload()
        except Exception as exc:
            log.error("broker reload after a revocation failed: %s", exc)

    return _run
