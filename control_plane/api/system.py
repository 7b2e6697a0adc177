"""Liveness and readiness of the control plane, and its trust root for gateways."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from control_plane.context import ControlPlaneContext, get_ctx

router = APIRouter(tags=["system"])


@router.get("/health", summary="The process is up")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Database reachable and broker connected")
async def ready(ctx: ControlPlaneContext = Depends(get_ctx)) -> JSONResponse:
    problems = []
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}")
    if ctx.mqtt is not None and not ctx.mqtt.connected.is_set():
        problems.append("broker: not connected")
    body: dict[str, Any] = {"ready": not problems, "problems": problems}
    return JSONResponse(body, status_code=200 if not problems else 503)


@router.get("/api/v1/trust-root", summary="The bundle trust root gateways verify against")
async def trust_root(ctx: ControlPlaneContext = Depends(get_ctx)) -> Any:
    if ctx.trust_root.is_tuf:  # the fleet's signed TUF root.json, byte for byte
        from fastapi import Response

        return Response(ctx.trust_root.to_bytes(), media_type="application/json")
    return ctx.trust_root.model_dump(mode="json")
