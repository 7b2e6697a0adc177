"""Staged rollouts: create, inspect, pause, resume, abort, roll back (docs/rollout.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.registry import RegistryError
from control_plane.rollout.service import RolloutError, RolloutService, RolloutSpec

router = APIRouter(prefix="/api/v1/rollouts", tags=["rollouts"])


def _svc(ctx: ControlPlaneContext) -> RolloutService:
    svc = ctx.services.get("rollouts")
    if svc is None:
        raise HTTPException(503, "the rollout area is not running in this control plane")
    return svc  # type: ignore[no-any-return]


async def _call(fn: Any, *args: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except RolloutError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("", summary="Create a staged rollout of a registry version (waves, rate, soak, gates)")
async def create_rollout(
    body: RolloutSpec, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    return await _call(_svc(ctx).create, body)  # type: ignore[no-any-return]


@router.get("", summary="List rollouts, newest first")
async def list_rollouts(
    status: str | None = Query(default=None, description="only rollouts in this state"),
    limit: int = Query(default=100, ge=1, le=1000),
    ctx: ControlPlaneContext = Depends(get_ctx),
) -> dict[str, Any]:
    return {"rollouts": await _call(_svc(ctx).list_rollouts, status, limit)}


@router.get(
    "/{rollout_id}", summary="A rollout with its waves, per-wave device counts, gates and events"
)
async def get_rollout(
    rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    return await _call(_svc(ctx).get, rollout_id)  # type: ignore[no-any-return]


@router.get("/{rollout_id}/devices", summary="Every device of a rollout: wave, status, reason")
async def rollout_devices(
    rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    return {"devices": await _call(_svc(ctx).devices, rollout_id)}


@router.post(
    "/{rollout_id}/pause", summary="Stop giving devices the new version (nothing is undone)"
)
async def pause(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).pause, rollout_id)  # type: ignore[no-any-return]


@router.post("/{rollout_id}/resume", summary="Continue a paused rollout (a failed wave runs again)")
async def resume(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).resume, rollout_id)  # type: ignore[no-any-return]


@router.post("/{rollout_id}/abort", summary="Stop for good and roll the current wave back")
async def abort(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).abort, rollout_id)  # type: ignore[no-any-return]


@router.post(
    "/{rollout_id}/rollback",
    summary="Roll every device of the rollout back to its previous version",
)
async def rollback(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).rollback, rollout_id)  # type: ignore[no-any-return]
