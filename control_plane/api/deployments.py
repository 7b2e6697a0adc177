"""Direct deployment of a registry version to named gateways (the single-step push)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.device_ids import DeviceId
from control_plane.registry import RegistryError
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])


class DeployRequest(BaseModel):
    model: str
    version: int | None = Field(default=None, ge=1, description="default: the production alias")
    devices: list[DeviceId] = Field(min_length=1, max_length=10_000)
    rollback_of: int | None = Field(
        default=None, ge=1, description="signed rollback order: the version being rolled back from"
    )


def _deployment_state(group: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """A deployment's bundle and per-device status (``None``: it did not exist)."""
    ctx: ControlPlaneContext = args["ctx"]
    try:
        d = ctx.deployments.get(group)
    except KeyError:
        return None
    devices = {k: v.get("status") for k, v in d["devices"].items()}
    return {"bundle_id": d["bundle_id"], "devices": devices}


@router.post("", summary="Build and sign a bundle from the registry and push it to devices")
@audits("deployment.create", "{result[id]}", snapshot=_deployment_state)
async def deploy(
    body: DeployRequest, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    try:
        mv = await run_in_threadpool(ctx.registry.resolve, body.model, body.version)
        deploy = ctx.deployments.deploy
        return await run_in_threadpool(
            deploy, body.model, mv.version, body.devices, rollback_of=body.rollback_of
        )
    except RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except (ValueError, RuntimeError) as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/{group_id}", summary="Per-device status of a deployment")
async def get_deployment(
    group_id: str, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    try:
        return await run_in_threadpool(ctx.deployments.get, group_id)
    except KeyError:
        raise HTTPException(404, f"no deployment {group_id!r}") from None
