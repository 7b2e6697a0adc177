"""One gate in front of every router: API key + role check, and the audit of every change.

A pure ASGI middleware (no ``BaseHTTPMiddleware``: it would buffer streamed responses and
run handlers in another task). For each HTTP request under ``/api/v1``:

1. ``policy.required_role`` says which role it needs (or none);
2. the presented key is checked through the failed-auth throttle (429 while locked out,
   401 for a missing/unknown/revoked key, 403 for too low a role), the handler never runs;
3. the principal is left in ``scope["state"]["principal"]`` for route-level checks;
4. after the response has been sent, a change (any method but GET/HEAD/OPTIONS), allowed
   or refused, is appended to the audit log: who, method + path, status, source address;
   while the handler runs, ``audit_trail`` knows the actor, so a route that declared its
   change (``@audits``) adds the object's before -> after in an entry of its own.

When ``auth_enabled`` is false (``farmiq control-plane serve --insecure``) the gate is
open, but every change is still audited, with the actor ``local``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import HTTPException
from starlette._utils import get_route_path
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.security.audit_log import audit
from control_plane.security.audit_trail import RequestAudit, begin_request, end_request
from control_plane.security.dependencies import (
    SecurityService,
    check_key,
    find_security,
    presented_key,
)
from control_plane.security.policy import API_PREFIX, is_change, required_role
from control_plane.security.roles import Principal

log = logging.getLogger(__name__)


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.enabled:
            await self._insecure(scope, receive, send)
            return
        method: str = scope["method"]
        # The path the router matches (without any --root-path), so the gate and the
        # routing can never disagree about which endpoint this is.
        path = get_route_path(scope)
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        needed = required_role(method, path)
        changes = is_change(method)
        if needed is None and not changes:
            await self.app(scope, receive, send)
            return
        service = find_security(scope.get("app"))
        if service is None or not service.enabled:
            # Auth is on in the settings but the service is missing: fail closed.
            await JSONResponse({"detail": "security not initialised"}, 503)(scope, receive, send)
            return
        ip = scope["client"][0] if scope.get("client") else "unknown"
        principal: Principal | None = None
        status_box = {"status": 500}
        if needed is not None:
            try:
                principal = await anyio.to_thread.run_sync(
                    check_key, service, ip, presented_key(Headers(scope=scope))
                )
                if not principal.allows(needed):
                    raise HTTPException(403, f"this action needs the {needed.label} role")
            except HTTPException as exc:
                if changes and exc.status_code != 429:  # a lock-out must not flood the log
                    await self._audit(service, principal, method, path, exc.status_code, ip, scope)
                await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(
                    scope, receive, send
                )
                return
            scope.setdefault("state", {})["principal"] = principal

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = int(message["status"])
            await send(message)

        token = None
        if changes:
            actor = principal.actor if principal is not None else "unauthenticated"
            token = begin_request(RequestAudit(service.engine, actor, ip, method, path))
        try:
            await self.app(scope, receive, send_recording)
        finally:
            if token is not None:
                end_request(token)
            if changes:
                await self._audit(service, principal, method, path, status_box["status"], ip, scope)

    async def _insecure(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Auth off: no gate, but changes under /api/v1 are recorded as actor ``local``."""
        method: str = scope["method"]
        path = get_route_path(scope)
        service = find_security(scope.get("app"))
        in_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        if not (in_api and is_change(method)) or service is None:
            await self.app(scope, receive, send)
            return
        ip = scope["client"][0] if scope.get("client") else "unknown"
        status_box = {"status": 500}

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = int(message["status"])
            await send(message)

        token = begin_request(RequestAudit(service.engine, "local", ip, method, path))
        try:
            await self.app(scope, receive, send_recording)
        finally:
            end_request(token)
            await self._audit(
                service, None, method, path, status_box["status"], ip, scope, actor="local"
            )

    @staticmethod
    async def _audit(
        service: SecurityService,
        principal: Principal | None,
        method: str,
        path: str,
        status: int,
        ip: str,
        scope: Scope,
        actor: str | None = None,
    ) -> None:
        detail: dict[str, Any] = {"method": method, "status": status}
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            detail["query"] = query[:512]
        if actor is None:
            actor = principal.actor if principal is not None else "unauthenticated"
        try:
            await anyio.to_thread.run_sync(
                lambda: audit(service.engine, actor, f"http.{method.lower()}", path, ip, detail)
            )
        except Exception:  # the change happened; losing its record must be loud, not fatal
            log.exception("could not append %s %s by %s to the audit log", method, path, actor)
