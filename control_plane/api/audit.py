"""Audit log query API (admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from control_plane.api.input_guard import ApiDatetime
from control_plane.security import Principal, Role, get_security, query_audit, require_role

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("")
def list_audit(
    request: Request,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: ApiDatetime | None = None,
    until: ApiDatetime | None = None,
    before_id: int | None = Query(default=None, ge=0, le=2**63 - 1),
    limit: int = Query(default=100, ge=1, le=1000),
    _: Principal = Depends(require_role(Role.ADMIN)),
) -> list[dict[str, object]]:
    """Entries newest first; filter by actor/action/target/time, page with ``before_id``."""
    entries = query_audit(
        get_security(request).engine,
        actor=actor,
        action=action,
        target=target,
        since=since,
        until=until,
        limit=limit,
        before_id=before_id,
    )
    return [e.to_dict() for e in entries]
