"""FastAPI wiring: ``install_security(app, engine)`` once, then ``Depends(require_role(...))``.

Keys are read from ``Authorization: Bearer <key>`` or ``X-API-Key``. Every failure (missing,
unknown or revoked key) counts against the caller's address in ``FailedAuthThrottle``;
a locked-out address gets 429 with ``Retry-After`` before its key is even looked at.
A valid key with too low a role gets 403 (that is not an authentication failure).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request, status

from control_plane.security.api_keys import ApiKeyStore
from control_plane.security.audit_log import create_audit_table
from control_plane.security.roles import Principal, Role
from control_plane.security.throttle import FailedAuthThrottle


@dataclass
class SecurityService:
    engine: sa.Engine
    keys: ApiKeyStore
    throttle: FailedAuthThrottle = field(default_factory=FailedAuthThrottle)


def install_security(
    app: FastAPI, engine: sa.Engine, *, throttle: FailedAuthThrottle | None = None
) -> SecurityService:
    """Create the security tables and attach the service to ``app.state.security``."""
    create_audit_table(engine)
    service = SecurityService(
        engine=engine, keys=ApiKeyStore(engine), throttle=throttle or FailedAuthThrottle()
    )
    app.state.security = service
    return service


def get_security(request: Request) -> SecurityService:
    service = getattr(request.app.state, "security", None)
    if service is None:
        raise RuntimeError("control_plane.security.install_security(app, engine) was not called")
    return service  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    # The direct peer. Behind a reverse proxy, run uvicorn with --proxy-headers and
    # --forwarded-allow-ips so this is the real client and not the proxy.
    return request.client.host if request.client else "unknown"


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def authenticate(request: Request) -> Principal:
    service = get_security(request)
    ip = client_ip(request)
    wait = service.throttle.retry_after(ip)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed authentication attempts",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    key = _presented_key(request)
    principal = service.keys.authenticate(key) if key else None
    if principal is None:
        service.throttle.record_failure(ip)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    service.throttle.record_success(ip)
    request.state.principal = principal
    return principal


def require_role(role: Role | str) -> Callable[[Request], Principal]:
    """A dependency that authenticates the caller and demands at least ``role``."""
    needed = Role.parse(role)

    def _dependency(request: Request) -> Principal:
        principal = authenticate(request)
        if not principal.allows(needed):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this action needs the {needed.label} role"
            )
        return principal

    _dependency.__name__ = f"require_{needed.label}"
    return _dependency


def audit_request(
    request: Request,
    principal: Principal,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> int:
    """Audit a change made through the API by ``principal`` (actor and address filled in)."""
    from control_plane.security.audit_log import audit

    return audit(
        get_security(request).engine, principal.actor, action, target, client_ip(request), detail
    )
