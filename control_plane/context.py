"""Shared resources of one control-plane process, handed to API routes by ``get_ctx``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from control_plane.bundles import BundleService
from control_plane.db import Database
from control_plane.deployments import DeploymentService
from control_plane.mqtt_bus import MqttBus
from control_plane.registry import ModelRegistry
from control_plane.settings import ControlPlaneSettings
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot

log = logging.getLogger(__name__)

PromotionHook = Callable[[str, int], None]  # (model name, version)


@dataclass
class ControlPlaneContext:
    settings: ControlPlaneSettings
    db: Database
    registry: ModelRegistry
    signers: list[Signer]
    trust_root: TrustRoot
    bundles: BundleService
    deployments: DeploymentService
    mqtt: MqttBus | None
    promotion_hooks: list[PromotionHook] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)  # per-area services by name

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.db.session() as s:
            yield s

    @property
    def mlflow(self) -> Any:
        return self.registry.client

    def promoted(self, name: str, version: int) -> None:
        from control_plane.security.audit_log import audit

        for hook in self.promotion_hooks:
            ok = True
            try:
                hook(name, version)
            except Exception:
                ok = False
                log.exception("promotion hook failed for %s v%s", name, version)
            try:  # every automatic action is audited (docs/security.md)
                hook_name = getattr(hook, "__qualname__", repr(hook))
                audit(self.engine, "system:promotion", "promotion.hook", f"{name}@{version}",
                      "", {"hook": hook_name, "ok": ok, "after": {"version": version}})  # fmt: skip
            except Exception:
                log.exception("could not audit promotion hook for %s v%s", name, version)

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.stop()
        self.db.engine.dispose()


def build_context(settings: ControlPlaneSettings) -> ControlPlaneContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    from control_plane.schema import prepare_schema

    prepare_schema(db)  # SQLite: create_all; PostgreSQL: Alembic upgrade to head
    registry = ModelRegistry(settings.resolved_mlflow_uri(), settings.data_dir / "mlartifacts")
    signers, trust, director_signers = _signing_material(settings)
    bundles = BundleService(
        db, registry, signers, settings.data_dir / "bundles", settings.bundle_expiry_days
    )
    from control_plane.director import Director

    director = Director(db, director_signers)
    bus: MqttBus | None = None
    if settings.mqtt.enabled:
        bus = MqttBus(settings.mqtt)
        bus.director = director  # seals every signed down/ document before it leaves
        if not bus.start():
            log.warning(
                "broker %s:%s not reachable yet; retrying in the background",
                settings.mqtt.host,
                settings.mqtt.port,
            )
    deployments = DeploymentService(db, bundles, bus)
    ctx = ControlPlaneContext(settings, db, registry, signers, trust, bundles, deployments, bus)
    ctx.services["director"] = director
    return ctx


def _signing_material(
    settings: ControlPlaneSettings,
) -> tuple[list[Signer], TrustRoot, list[Signer]]:
    """Bundle-signing keys and the trust root gateways verify against (files or a KMS:
    ``signing.backend``, control_plane/signing), and the director keys.

    With a fleet directory (``farmiq provision init-fleet``) the director keys are the
    fleet's; without one (the embedded default) one is made under data_dir/keys and the
    simple trust root lists it.
    """
    from control_plane.signing import build_signers

    signers, trust = build_signers(settings)
    if settings.fleet_dir is not None:
        from provisioning.fleet import FleetPaths

        director_paths = FleetPaths(settings.fleet_dir).director_keys()
        if not director_paths:
            raise RuntimeError(
                f"fleet_dir {settings.fleet_dir} has no director keys (control-plane/"
                "director-*.key); the fleet predates the director role: re-create it or add "
                "them with a root rotation"
            )
        return signers, trust, [Signer.load(p) for p in director_paths]
    director = [Signer.load_or_create(settings.data_dir / "keys" / "director.pem")]
    if "director" not in trust.roles:
        trust = TrustRoot.for_signers(
            signers, threshold=min(settings.signing.threshold, len(signers)), director=director
        )
        trust.save(settings.data_dir / "keys" / "trust_root.json")
    return signers, trust, director


def get_ctx(request: Request) -> ControlPlaneContext:
    return request.app.state.ctx  # type: ignore[no-any-return]
