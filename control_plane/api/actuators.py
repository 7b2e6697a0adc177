"""Operator API for actuator commands (fans, heaters, feeders) on gateways' MCUs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.device_ids import DeviceId
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1/actuators", tags=["actuators"])


class Command(BaseModel):
    device_id: DeviceId
    actuator: str = Field(
        min_length=1, max_length=32, description="fan, heater, feeder, light or water_valve"
    )
    value: float = Field(ge=0, le=1, description="fraction of full power or opening")
    mcu: str | None = Field(
        default=None, max_length=64, description="MCU id; optional when the gateway has one"
    )
    command_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="idempotency id; generated if absent"
    )


def _actuator_state(device_id: str, args: dict[str, Any]) -> dict[str, Any]:
    """The last command sent to this actuator of this device, and what became of it."""
    from sqlalchemy import select

    from control_plane.actuators import ActuatorCommand

    body: Command = args["body"]
    svc = args["ctx"].services["actuators"]
    with svc.db.session() as s:
        row = s.scalars(
            select(ActuatorCommand)
            .where(
                ActuatorCommand.device_id == device_id, ActuatorCommand.actuator == body.actuator
            )
            .order_by(ActuatorCommand.created.desc())
            .limit(1)
        ).first()
        last = None if row is None else {
            "value": row.value, "status": row.status, "command_id": row.command_id,
        }  # fmt: skip
    return {body.actuator: last}


@router.post("", summary="Send an actuator command (runs at most once per command id)")
@audits("actuator.command", "{body.device_id}", snapshot=_actuator_state)
async def send(body: Command, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    svc = ctx.services["actuators"]
    try:
        return await run_in_threadpool(
            svc.send,
            body.device_id,
            body.actuator,
            body.value,
            mcu=body.mcu,
            command_id=body.command_id,
        )
    except (ValueError, RuntimeError) as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/unmatched", summary="Results from gateways for commands not sent from here")
async def unmatched(
    device_id: str | None = None, limit: int = 100, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    rows = await run_in_threadpool(ctx.services["actuators"].unmatched, device_id, limit)
    return {"results": rows}


@router.get("/{command_id}", summary="A command and what the MCU did")
async def get(command_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        return await run_in_threadpool(ctx.services["actuators"].get, command_id)
    except KeyError:
        raise HTTPException(404, f"no command {command_id!r}") from None
