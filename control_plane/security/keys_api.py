"""API-key administration (admin only): list, create (secret shown once), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from control_plane.security.audit_trail import audits
from control_plane.security.dependencies import get_security, require_role
from control_plane.security.roles import Principal, Role

router = APIRouter(prefix="/api/v1/security", tags=["security"])


class KeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: str = Field(default="viewer", pattern="^(viewer|operator|admin)$")


@router.get("/keys", summary="API keys (names, roles, state; never the secrets)")
async def list_keys(
    request: Request, _: Principal = Depends(require_role(Role.ADMIN))
) -> list[dict[str, object]]:
    keys = await run_in_threadpool(get_security(request).keys.list)
    return [
        {
            "name": k.name,
            "role": k.role.label,
            "prefix": k.prefix,
            "created_at": k.created_at.isoformat(),
            "revoked": k.revoked,
        }
        for k in keys
    ]


def _key_state(name: str, args: dict[str, object]) -> dict[str, object] | None:
    """A key's role and whether it is revoked (never its secret); ``None``: no such key."""
    request: Request = args["request"]  # type: ignore[assignment]
    keys = [k for k in get_security(request).keys.list() if k.name == name]
    if not keys:
        return None
    k = keys[-1]
    return {"role": k.role.label, "revoked": k.revoked, "prefix": k.prefix}


@router.post("/keys", summary="Create an API key; the answer is the only time it is shown")
@audits("apikey.create", "{body.name}", snapshot=_key_state)
async def create_key(
    body: KeyRequest, request: Request, principal: Principal = Depends(require_role(Role.ADMIN))
) -> dict[str, str]:
    store = get_security(request).keys
    try:
        key = await run_in_threadpool(
            store.create, body.name, body.role, created_by=principal.actor
        )
    except Exception as exc:  # duplicate name (IntegrityError) or a bad value
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"cannot create key: {type(exc).__name__}"
        ) from None
    return {"name": body.name, "role": body.role, "key": key}


@router.delete("/keys/{name}", summary="Revoke an API key (it stops working at once)")
@audits("apikey.revoke", "{name}", snapshot=_key_state)
async def revoke_key(
    name: str, request: Request, principal: Principal = Depends(require_role(Role.ADMIN))
) -> dict[str, object]:
    if not await run_in_threadpool(get_security(request).keys.revoke, name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no active key named {name!r}")
    return {"name": name, "revoked": True}
