"""The operator dashboard at ``/dashboard``: alerts, fleet, rollouts by wave, drift, plots.

The page is a shell with the data embedded as JSON; its script renders every section and
then fetches ``/dashboard/data`` every few seconds and renders again, so it stays live
without reloading. The plots use a small SVG plotter shipped in the package
(``/dashboard/static/plot.js``, control_plane/static/): nothing is fetched from elsewhere.
Every section reads through control_plane/ops_queries.py, which tolerates an area that is
not installed.

With ``auth_enabled`` both need an API key with the viewer role, in ``Authorization:
Bearer``, ``X-API-Key``, or (for a browser) once as ``/dashboard?key=...``: the key then
goes into an HttpOnly, SameSite=Strict cookie and the page reloads without it in the URL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from control_plane import ops_queries
from control_plane.context import ControlPlaneContext, get_ctx
from farmiq import __version__

router = APIRouter(tags=["dashboard"])
PACKAGE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(PACKAGE / "templates"))
STATIC = PACKAGE / "static"
STATIC_FILES = {"plot.js": "text/javascript", "dashboard.js": "text/javascript"}

ACTIVE = ("pending", "running", "soaking", "paused")
FLEET_ROWS = 25  # rows shown before "show all"
HEAT_ROWS = 30  # heatmap rows per model, most drifted gateways first
REFRESH_S = 5
COOKIE = "farmiq_dashboard_key"


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
            "drifting_models": len({m["model"] for m in drift if m["status"] == "drift"}),
            "models": len(models),
            "alerts": len(alerts),
        },
        "devices": devices,
        "rollouts": rollouts,
        "drift": drift,
        "models": models,
        "alerts": alerts,
        "serving": ops_queries.serving(ctx),
    }


def _presented(request: Request) -> str | None:
    from control_plane.security.dependencies import presented_key

    return presented_key(request.headers) or request.cookies.get(COOKIE)


async def viewer(request: Request) -> None:
    """Auth on: a key with at least the viewer role (401 / 403 / 429 otherwise)."""
    from control_plane.security.dependencies import check_key, client_ip, find_security
    from control_plane.security.roles import Role

    service = find_security(request.app)
    settings = getattr(getattr(request.app.state, "ctx", None), "settings", None)
    if service is None:
        if settings is not None and settings.auth_enabled:
            raise HTTPException(503, "security not initialised")
        return
    if not service.enabled:
        return
    key = request.query_params.get("key") or _presented(request)
    principal = await run_in_threadpool(check_key, service, client_ip(request), key)
    if not principal.allows(Role.VIEWER):
        raise HTTPException(403, "the dashboard needs the viewer role")


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    summary="Operator dashboard (HTML)",
    dependencies=[Depends(viewer)],
)
async def dashboard(request: Request, ctx: ControlPlaneContext = Depends(get_ctx)) -> Response:
    key = request.query_params.get("key")
    if key:  # checked by ``viewer``: keep it in a cookie, not in the URL and the history
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.set_cookie(
            COOKIE, key, httponly=True, samesite="strict", path="/dashboard", max_age=12 * 3600
        )
        return resp
    data = await run_in_threadpool(collect, ctx)
    context = {
        "d": data,
        "fleet_rows": FLEET_ROWS,
        "heat_rows": HEAT_ROWS,
        "refresh_s": REFRESH_S,
    }
    return templates.TemplateResponse(request, "dashboard.html", context)


@router.get(
    "/dashboard/data", summary="The dashboard's data as JSON", dependencies=[Depends(viewer)]
)
async def dashboard_data(ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await run_in_threadpool(collect, ctx)


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(404, "no such file")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "max-age=300"},
    )
