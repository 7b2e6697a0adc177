"""Staged rollouts: create, inspect, pause, resume, abort, roll back (docs/rollout.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.registry import RegistryError
from control_plane.rollout.service import RolloutError, RolloutService, RolloutSpec
from control_plane.rollout.targeting import resolve
from control_plane.security.audit_trail import audits
from control_plane.tables import Device

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
    except ValueError as exc:  # e.g. a version whose metadata cannot make a bundle
        raise HTTPException(422, " ".join(str(exc).split())) from None


def _rollout_state(rid: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """A rollout's state, as the scheduler records its own steps: status and wave."""
    try:
        r = _svc(args["ctx"]).get(rid)
    except (RolloutError, HTTPException):
        return None
    return {"status": r["status"], "wave": r["current_wave"]}


@router.post("", summary="Create a staged rollout of a registry version (waves, rate, soak, gates)")
@audits("rollout.create", "{result[id]}", snapshot=_rollout_state)
async def create_rollout(
    body: RolloutSpec, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    svc = _svc(ctx)
    if not await run_in_threadpool(_matching_devices, svc, body):
        t = body.targeting
        what = {k: v for k, v in t.model_dump().items() if v and k != "percent"}
        raise HTTPException(
            422,
            f"the rollout's targeting matches 0 devices ({what or 'the whole fleet'}, "
            f"{t.percent:g}% of them): nothing would be installed",
        )
    return await _call(svc.create, body)  # type: ignore[no-any-return]


def _matching_devices(svc: RolloutService, spec: RolloutSpec) -> list[str]:
    """The devices the rollout would target now (the scheduler resolves them again, wave by
    wave, as the fleet changes; this only refuses a rollout that could never act)."""
    with svc.db.session() as s:
        fleet = [(d.device_id, d.reported or {}, d.farm_id) for d in s.scalars(select(Device))]
    return resolve(spec.targeting, spec.model, fleet)


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
@audits("rollout.pause", "{rollout_id}", snapshot=_rollout_state)
async def pause(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).pause, rollout_id)  # type: ignore[no-any-return]


@router.post("/{rollout_id}/resume", summary="Continue a paused rollout (a failed wave runs again)")
@audits("rollout.resume", "{rollout_id}", snapshot=_rollout_state)
async def resume(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).resume, rollout_id)  # type: ignore[no-any-return]


@router.post("/{rollout_id}/abort", summary="Stop for good and roll the current wave back")
@audits("rollout.abort", "{rollout_id}", snapshot=_rollout_state)
async def abort(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).abort, rollout_id)  # type: ignore[no-any-return]


@router.post(
    "/{rollout_id}/rollback",
    summary="Roll every device of the rollout back to its previous version",
)
@audits("rollout.rollback", "{rollout_id}", snapshot=_rollout_state)
async def rollback(rollout_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _call(_svc(ctx).rollback, rollout_id)  # type: ignore[no-any-return]
