"""The FastAPI application factory."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from control_plane.context import ControlPlaneContext, build_context
from control_plane.settings import ControlPlaneSettings
from farmiq import __version__

log = logging.getLogger(__name__)

# Each area's router module; an area that is not installed is skipped.
ROUTER_MODULES = [
    "control_plane.api.system",
    "control_plane.api.registry",
    "control_plane.api.deployments",
    "control_plane.api.features",
    "control_plane.api.drift",
    "control_plane.api.devices",
    "control_plane.api.rollouts",
    "control_plane.api.bundles",
    "control_plane.api.cloud_inference",
    "control_plane.api.enrollment",
    "control_plane.api.audit",
    "control_plane.api.dashboard",
    "control_plane.api.metrics",
    "control_plane.api.actuators",
    "control_plane.api.farms",
    "control_plane.api.learning",
]

# Per-area start-up hooks: ``setup(ctx)`` registers services, MQTT handlers, promotion hooks.
SETUP_MODULES = [
    "control_plane.features_setup",
    "control_plane.drift.setup",
    "control_plane.rollout.setup",
    "control_plane.cloud_inference_setup",
    "control_plane.security.setup",
    "control_plane.actuators",
    "control_plane.trust_push",  # newer trust roots to gateways that report older ones
    "control_plane.ops_history",  # the dashboard's serving plots
    "control_plane.alerts.setup",  # it connects the other areas' alert sources
    "control_plane.tracing",  # last: spans around the areas' steps (when OTEL_* say so)
]


def _optional(name: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            return None  # the area's module does not exist (yet)
        raise


def create_app(
    settings: ControlPlaneSettings | None = None, ctx: ControlPlaneContext | None = None
) -> FastAPI:
    settings = settings or ControlPlaneSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ctx or build_context(settings)
        app.state.ctx = context
        for name in SETUP_MODULES:
            mod = _optional(name)
            if mod is not None:
                mod.setup(context)
        yield
        context.close()

    app = FastAPI(
        title="FarmIQ Edge control plane",
        version=__version__,
        description="Fleet operator API: registry, bundles, rollouts, devices, features, drift.",
        lifespan=lifespan,
    )
    for name in ROUTER_MODULES:
        mod = _optional(name)
        if mod is not None:
            app.include_router(mod.router)
    # Operator-API security: one gate (API key + role, audit of changes) before every router.
    security = _optional("control_plane.security.setup")
    if security is not None:
        security.install(app, settings)
    # Request ids, JSON access logs and HTTP latency metrics (control_plane/observability.py).
    from control_plane.observability import install as install_observability

    install_observability(app)
    # No NUL in any string input, for every route (control_plane/api/input_guard.py).
    from control_plane.api.input_guard import install as install_input_guard

    install_input_guard(app)
    return app
