"""FastAPI wiring: ``install_security(app, engine)`` once, then ``Depends(require_role(...))``.

In the control plane the service is created by ``control_plane.security.setup`` and every
``/api/v1`` request is checked by ``SecurityMiddleware`` before any router sees it; the
route-level ``require_role`` then reuses the principal the middleware found.

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
from control_plane.security.roles import ANONYMOUS, Principal, Role
from control_plane.security.throttle import FailedAuthThrottle


@dataclass
class SecurityService:
    engine: sa.Engine
    keys: ApiKeyStore
    throttle: FailedAuthThrottle = field(default_factory=FailedAuthThrottle)
    enabled: bool = True  # False: every caller is ANONYMOUS (demo / development mode)


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


def find_security(app: Any) -> SecurityService | None:
    """The app's service: ``app.state.security`` or the control plane's ``ctx.services``."""
    state = getattr(app, "state", None)
    service = getattr(state, "security", None)
    if service is None:
        ctx = getattr(state, "ctx", None)
        service = getattr(ctx, "services", {}).get("security") if ctx is not None else None
    return service  # type: ignore[no-any-return]


def get_security(request: Request) -> SecurityService:
    service = find_security(request.app)
    if service is None:
        raise RuntimeError("control_plane.security.install_security(app, engine) was not called")
    return service  # type: ignore[no-any-return]


def client_ip(request: Request) -> str:
    # The direct peer. Behind a reverse proxy, run uvicorn with --proxy-headers and
    # --forwarded-allow-ips so this is the real client and not the proxy.
    return request.client.host if request.client else "unknown"


def _presented_key(request: Request) -> str | None:
    return presented_key(request.headers)


def presented_key(headers: Any) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key`` (``headers``: a mapping)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")  # type: ignore[no-any-return]


def authenticate(request: Request) -> Principal:
    service = get_security(request)
    if not service.enabled:
        return ANONYMOUS
    known = request.scope.get("state", {}).get("principal")
    if isinstance(known, Principal):  # already checked by SecurityMiddleware
        return known
    principal = check_key(service, client_ip(request), _presented_key(request))
    request.state.principal = principal
    return principal


def check_key(service: SecurityService, ip: str, key: str | None) -> Principal:
    """Throttle, then look the key up; raise 429 or 401 ``HTTPException`` on failure."""
    wait = service.throttle.retry_after(ip)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed authentication attempts",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    principal = service.keys.authenticate(key) if key else None
    if principal is None:
        service.throttle.record_failure(ip)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    service.throttle.record_success(ip)
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
