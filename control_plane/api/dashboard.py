"""The operator dashboard at ``/dashboard``: fleet, rollouts by wave, drift heatmap, models.

Server-rendered HTML (Jinja2) with a little JavaScript for auto-refresh and relative
times; ``/dashboard/data`` serves the same data as JSON. Every section reads through
control_plane/ops_queries.py, which tolerates an area that is not installed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from control_plane import ops_queries
from control_plane.context import ControlPlaneContext, get_ctx
from farmiq import __version__

router = APIRouter(tags=["dashboard"])
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))

ACTIVE = ("pending", "running", "soaking", "paused")
FLEET_ROWS = 25  # rows shown before "show all"
HEAT_ROWS = 30  # heatmap rows per model, most drifted gateways first


def collect(ctx: ControlPlaneContext) -> dict[str, Any]:
    # Most recently heard from first: the rows an operator looks at first.
    devices = sorted(ops_queries.fleet(ctx), key=lambda d: -(d["last_seen"] or 0))
    rollouts = ops_queries.rollouts(ctx)
    drift = ops_queries.drift(ctx)
    models = ops_queries.models(ctx)
    alerts = ops_queries.alerts(ctx)
    return {
        "generated": time.time(),
        "version": __version__,
        "summary": {
            "devices": len(devices),
            "online": sum(d["status"] == "online" for d in devices),
            "degraded": sum(d["health"]["state"] == "degraded" for d in devices),
            "active_rollouts": sum(r["status"] in ACTIVE for r in rollouts),
            "drifting_models": sum(m["status"] == "drift" for m in drift),
            "models": len(models),
        },
        "devices": devices,
        "rollouts": rollouts,
        "drift": drift,
        "models": models,
        "alerts": alerts,
    }


@router.get("/dashboard", response_class=HTMLResponse, summary="Operator dashboard (HTML)")
async def dashboard(request: Request, ctx: ControlPlaneContext = Depends(get_ctx)) -> HTMLResponse:
    data = await run_in_threadpool(collect, ctx)
    context = {"d": data, "active": ACTIVE, "fleet_rows": FLEET_ROWS, "heat_rows": HEAT_ROWS}
    return templates.TemplateResponse(request, "dashboard.html", context)


@router.get("/dashboard/data", summary="The dashboard's data as JSON")
async def dashboard_data(ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await run_in_threadpool(collect, ctx)
