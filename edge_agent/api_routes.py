"""The agent's local API routes (see docs/ARCHITECTURE.md for the full list)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.local_api import ApiError, LocalApi, Request, Response, json_response

if TYPE_CHECKING:
    from edge_agent.agent import Agent


def build_api(agent: Agent) -> LocalApi:
    api = LocalApi()

    @api.route("GET", "/health")
    async def health(req: Request) -> Response:
        return json_response({"status": "ok", "device_id": agent.device_id})

    @api.route("GET", "/ready")
    async def ready(req: Request) -> Response:
        ok, why = agent.ready()
        return json_response({"ready": ok, "reason": why}, 200 if ok else 503)

    @api.route("GET", "/api/v1/models")
    async def list_models(req: Request) -> Response:
        return json_response({"models": [_model_info(m) for m in agent.models.all()]})

    @api.route("GET", "/api/v1/models/{name}")
    async def get_model(req: Request) -> Response:
        m = agent.inference.model(req.params["name"])
        prev = agent.store.previous(m.name)
        info = _model_info(m)
        info["manifest"] = m.manifest.model_dump(mode="json")
        info["previous_version"] = prev.version if prev else None
        return json_response(info)

    @api.route("POST", "/api/v1/inference")
    async def infer(req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict) or "model" not in body or "inputs" not in body:
            raise ApiError(422, 'body must be {"model": name, "inputs": rows or {input: rows}}')
        budget = body.get("latency_budget_ms")
        if budget is not None and (not isinstance(budget, int | float) or budget <= 0):
            raise ApiError(422, "latency_budget_ms must be a positive number")
        return json_response(await agent.inference.infer(body["model"], body["inputs"], budget_ms=budget))

    @api.route("POST", "/api/v1/models/{name}/rollback")
    async def rollback(req: Request) -> Response:
        name = req.params["name"]
        if agent.models.get(name) is None:
            raise ApiError(404, f"unknown model {name!r}")
        async with agent.install_lock:
            import asyncio

            result = await asyncio.to_thread(agent.installer.rollback, name)
        if result.ok:
            await agent.publish_state()
        return json_response(result.as_dict(), 200 if result.ok else 409)

    @api.route("GET", "/api/v1/status")
    async def status(req: Request) -> Response:
        ok, why = agent.ready()
        return json_response(
            {
                "device_id": agent.device_id,
                "ready": ok,
                "reason": why,
                "broker_connected": agent.link.connected.is_set(),
                "last_install": agent.last_install.as_dict() if agent.last_install else None,
                "state": agent.reported_state(),
            }
        )

    return api


def _model_info(m) -> dict:  # type: ignore[no-untyped-def]
    return {
        "name": m.name,
        "version": m.version,
        "bundle_id": m.manifest.bundle_id,
        "runtime": m.manifest.runtime,
        "task": m.manifest.task,
        "warm": m.warm,
        "loaded_at": m.loaded_at,
        "inputs": [s.model_dump() for s in m.manifest.inputs],
        "outputs": [s.model_dump() for s in m.manifest.outputs],
        "serving": m.manifest.serving.model_dump(),
    }
