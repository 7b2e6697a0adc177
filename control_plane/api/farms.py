"""Data rights per farm (PDPA / GDPR): export everything held about a farm, or erase it.

- ``GET /api/v1/farms/{farm}/export``: a tar.gz (manifest.json, one JSON file per table,
  Feast rows, MLflow runs naming the farm's gateways, alerts). Viewer role.
- ``DELETE /api/v1/farms/{farm}?confirm={farm}``: erasure (control_plane/farm_data.py);
  answers with the report of what was deleted or redacted. Admin role (when auth is on),
  and ``confirm`` must repeat the farm's name; the erasure is appended to the audit log.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.farm_data import FarmData

router = APIRouter(prefix="/api/v1/farms", tags=["farms"])

FARM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def _farm(farm: str) -> str:
    if not FARM_ID.match(farm):
        raise HTTPException(422, "farm ids are 1-64 letters, digits, '_', '.', ':' or '-'")
    return farm


def _require_admin(request: Request, ctx: ControlPlaneContext) -> str:
    """The actor's name; 403 unless admin (the security gate already checked the key)."""
    from control_plane.security.roles import Role

    principal = request.scope.get("state", {}).get("principal")
    if principal is None:
        if ctx.settings.auth_enabled:
            raise HTTPException(401, "missing or invalid API key")
        return "local"
    if not principal.allows(Role.ADMIN):
        raise HTTPException(403, "erasing a farm needs the admin role")
    return str(principal.actor)


@router.get("/{farm}/export", summary="Everything held about a farm, as a tar.gz archive")
async def export_farm(farm: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> Response:
    farm = _farm(farm)
    data = FarmData(ctx)
    if not await run_in_threadpool(data.devices, farm):
        raise HTTPException(404, f"no gateway of farm {farm!r} is known")
    body = await run_in_threadpool(data.archive, farm)
    return Response(
        body,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="farm-{farm}.tar.gz"'},
    )


@router.delete("/{farm}", summary="Erase everything held about a farm; returns what was done")
async def erase_farm(
    farm: str,
    request: Request,
    confirm: str = Query(description="repeat the farm id to confirm the erasure"),
    ctx: ControlPlaneContext = Depends(get_ctx),
) -> dict[str, Any]:
    farm = _farm(farm)
    actor = _require_admin(request, ctx)
    if confirm != farm:
        raise HTTPException(422, "confirm must repeat the farm id")
    data = FarmData(ctx)
    if not await run_in_threadpool(data.devices, farm):
        raise HTTPException(404, f"no gateway of farm {farm!r} is known")
    report = await run_in_threadpool(data.erase, farm)
    from control_plane.security.audit_log import audit
    from control_plane.security.audit_trail import audit_change

    ip = request.client.host if request.client else ""
    keys = ("tables", "features", "mlflow_runs_redacted")
    summary: dict[str, Any] = {k: report[k] for k in keys if k in report}
    # before: the devices and the rows held (= the rows the erasure removed); after: re-read.
    before = {"devices": report["devices"], "rows": report.get("tables", {})}
    after = {"devices": await run_in_threadpool(data.devices, farm), "rows": {}}
    detail = {"devices": len(report["devices"]), **summary}
    audit_id = await run_in_threadpool(
        lambda: audit_change("farm.erase", f"farm/{farm}", before, after, detail=detail)
    )
    if audit_id is None:  # no request audit context (security not initialised)
        audit_id = await run_in_threadpool(
            audit, ctx.engine, actor, "farm.erase", f"farm/{farm}", ip,
            {**detail, "before": before, "after": after},
        )  # fmt: skip
    report["audit_id"] = audit_id
    return report
