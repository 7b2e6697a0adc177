"""Before -> after of what an API call changed, declared once per route.

``SecurityMiddleware`` records *that* a change was asked for (actor, method, path, status)
for every call. What it cannot know is *what* changed. Each state-changing route says so in
one line, next to its path::

    @router.post("/{rollout_id}/pause")
    @audits("rollout.pause", "{rollout_id}", snapshot=_rollout_state)
    async def pause(rollout_id: str, ctx=Depends(get_ctx)): ...

``audits`` reads ``snapshot(target, args)`` (``args``: the endpoint's arguments, e.g.
``ctx``, path parameters, the body) before the handler runs and again after it finished
(returned *or* failed: what is true afterwards is recorded, even a half-done change), and
appends one entry: actor (the middleware's ``apikey:<name>``, or ``local`` with auth off),
action, target, ``detail.before`` / ``detail.after``, the method, path and the outcome
status. A target that names the call's result (``"{result[id]}"``: a rollout or
deployment being created) is resolved after the call; ``before`` is then ``None`` (the
object did not exist) and a failed create records nothing beyond the middleware's entry.

The snapshot is read around the handler, not inside its transaction: two operators racing
on one object can see each other's change in ``before``. Automatic steps that hold a lock
record inside their transaction instead (``audit_log.audit_in_session``).

A handler that must hand its entry's id back (farm erasure) calls ``audit_change`` itself.
Outside a request (a test calling the endpoint function, a CLI) ``audits`` is transparent.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from control_plane.security.audit_log import audit

log = logging.getLogger(__name__)

Snapshot = Callable[[str, dict[str, Any]], Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RequestAudit:
    """Who is calling, set by ``SecurityMiddleware`` for the length of one request."""

    engine: sa.Engine
    actor: str
    source_ip: str
    method: str
    path: str


_CURRENT: ContextVar[RequestAudit | None] = ContextVar("farmiq_request_audit", default=None)


def begin_request(req: RequestAudit) -> Any:
    """Make ``req`` the current request's audit context; returns the token to ``end``."""
    return _CURRENT.set(req)


def end_request(token: Any) -> None:
    _CURRENT.reset(token)


def current_request() -> RequestAudit | None:
    return _CURRENT.get()


def audit_change(
    action: str,
    target: str,
    before: Any,
    after: Any,
    *,
    status: int = 200,
    detail: dict[str, Any] | None = None,
    req: RequestAudit | None = None,
) -> int | None:
    """Append one before -> after entry for the current API call (blocking; run it in a
    thread). ``None`` outside a request."""
    req = req or _CURRENT.get()
    if req is None:
        return None
    body = {
        **(detail or {}),
        "before": before,
        "after": after,
        "method": req.method,
        "path": req.path,
        "status": status,
    }
    return audit(req.engine, req.actor, action, target, req.source_ip, body)


def _target(template: str, args: dict[str, Any], result: Any = None) -> str | None:
    try:
        return template.format(**args, result=result)
    except (KeyError, IndexError, AttributeError, TypeError):
        return None


def _read(snapshot: Snapshot, target: str, args: dict[str, Any]) -> Any:
    try:
        return snapshot(target, args)
    except Exception as exc:  # a snapshot must never turn a good call into a 500
        log.warning("audit snapshot of %s failed: %s", target, exc, exc_info=True)
        return {"snapshot_error": type(exc).__name__}


def audits(action: str, target: str, *, snapshot: Snapshot) -> Callable[[F], F]:
    """Declare a route's change: ``action``, the ``target`` template (``str.format`` over
    the endpoint's arguments and ``result``) and how to read the object's state."""

    def decorate(fn: F) -> F:
        is_async = inspect.iscoroutinefunction(fn)

        async def call(kwargs: dict[str, Any]) -> Any:
            if is_async:
                return await fn(**kwargs)
            return await run_in_threadpool(functools.partial(fn, **kwargs))

        @functools.wraps(fn)
        async def endpoint(**kwargs: Any) -> Any:
            req = _context(kwargs)
            if req is None:
                return await call(kwargs)
            known = _target(target, kwargs)
            before = await run_in_threadpool(_read, snapshot, known, kwargs) if known else None
            result: Any = None
            status = 500
            try:
                result = await call(kwargs)
                status = 200
                return result
            except HTTPException as exc:
                status = exc.status_code
                raise
            finally:
                name = known or _target(target, kwargs, result)
                if name is not None:
                    await run_in_threadpool(
                        _record, req, action, name, snapshot, kwargs, before, status
                    )

        endpoint.__farmiq_audits__ = action  # type: ignore[attr-defined]
        return endpoint  # type: ignore[return-value]

    return decorate


def _context(kwargs: dict[str, Any]) -> RequestAudit | None:
    """The middleware's context; else (an app with ``install_security`` and route-level
    ``require_role`` but no middleware) one built from the endpoint's ``Request``."""
    req = _CURRENT.get()
    if req is not None:
        return req
    request = next((v for v in kwargs.values() if isinstance(v, Request)), None)
    if request is None:
        return None
    from control_plane.security.dependencies import client_ip, find_security

    service = find_security(request.app)
    principal = request.scope.get("state", {}).get("principal")
    if service is None or principal is None:
        return None
    return RequestAudit(
        service.engine, principal.actor, client_ip(request), request.method, request.url.path
    )


def _record(
    req: RequestAudit,
    action: str,
    target: str,
    snapshot: Snapshot,
    args: dict[str, Any],
    before: Any,
    status: int,
) -> None:
    after = _read(snapshot, target, args)
    try:
        audit_change(action, target, before, after, status=status, req=req)
    except Exception:  # the change happened; losing its record must be loud, not fatal
        log.exception("could not append %s on %s to the audit log", action, target)


def declared_action(endpoint: Any) -> str | None:
    """The action a route's endpoint declared with ``audits`` (for the coverage test)."""
    return getattr(endpoint, "__farmiq_audits__", None)
