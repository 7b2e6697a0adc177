"""The device registry: inventory by tag, farm, model version and health, with desired
next to reported state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.rollout.registry_view import get_device, query_devices

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


@router.get("", summary="Devices, filtered by tag, farm, model (and version) and health")
async def list_devices(
    tag: str | None = Query(default=None, description="devices carrying this tag"),
    farm: str | None = Query(default=None, description="devices of this farm"),
    model: str | None = Query(default=None, description="devices running this model"),
    version: int | None = Query(default=None, ge=1, description="...at this version (needs model)"),
    health: str | None = Query(default=None, description="healthy | degraded | offline | unknown"),
    limit: int = Query(default=1000, ge=1, le=10000),
    ctx: ControlPlaneContext = Depends(get_ctx),
) -> dict[str, Any]:
    devs = await run_in_threadpool(
        lambda: query_devices(
            ctx.db, tag=tag, farm=farm, model=model, version=version, health=health, limit=limit
        )
    )
    return {"count": len(devs), "devices": devs}


@router.get("/{device_id}", summary="One device: reported, desired, health, transfer, shadow")
async def one_device(device_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    dev = await run_in_threadpool(get_device, ctx.db, device_id)
    if dev is None:
        raise HTTPException(404, f"no device {device_id!r} has reported yet")
    return dev
