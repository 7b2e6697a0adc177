"""The agent's local API routes (see docs/inference.md for the request and answer shapes).

``POST /api/v1/inference`` is the hot path: one orjson parse, a dict lookup for the
model's pre-resolved routing state, the router, one orjson dump. No pydantic, no
framework; errors become 4xx answers that say what is wrong.

The routes get narrow ports (``ApiPorts``): the router, the model set and store, the one
install service (rollback), the feature cache, the feedback handler and status providers;
never the agent. Domain errors (``RoutingError`` kinds) become HTTP statuses here, in
``edge_agent/api/errors.py``, and nowhere else. Drift, shadow and rollout health see the
answers through the router's observer channel, not through this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.api import kserve_v2
from edge_agent.api.errors import api_error
from edge_agent.api.local_api import ApiError, LocalApi, Request, Response, json_response
from edge_agent.api.openapi import openapi_document
from edge_agent.inference.router import RoutingError

if TYPE_CHECKING:
    from edge_agent.features.feature_cache import FeatureCache
    from edge_agent.inference.router import Router
    from edge_agent.models.install_service import InstallService
    from edge_agent.models.model_store import ModelStore
    from edge_agent.models.serving import ModelSet


@dataclass
class StatusProvider:
    ready: Callable[[], tuple[bool, str]]  # GET /ready, /v2/health/ready
    status: Callable[[], dict[str, Any]]  # GET /api/v1/status


@dataclass
class ApiPorts:
    device_id: str
    router: Router
    models: ModelSet
    store: ModelStore
    installs: InstallService
    features: FeatureCache
    feedback: Callable[[bytes], tuple[int, dict[str, Any]]]  # POST /api/v1/feedback
    status: StatusProvider
    resources: Callable[[], dict[str, Any]]


MAX_BATCH_REQUESTS = 256  # requests in one POST /api/v1/inference/batch
_OPT = orjson.OPT_SERIALIZE_NUMPY
_WARMUP_HELP = 'body must be {"model"?: name} or {"models"?: [name, ...]}, "runs"?: int'
_BODY_HELP = (
    'body must be {"model": name, "inputs": rows or {input: rows}, "latency_budget_ms"?: number}'
)


def _budget(body: dict[str, Any]) -> float | None:
    budget = body.get("latency_budget_ms")
    if budget is not None and (type(budget) not in (int, float) or budget <= 0):
        raise ApiError(422, "latency_budget_ms must be a positive number")
    return budget  # type: ignore[no-any-return]


def _request_fields(body: Any) -> tuple[str, Any, float | None, bool]:
    if type(body) is not dict:
        raise ApiError(422, _BODY_HELP)
    name = body.get("model")
    inputs = body.get("inputs")
    if type(name) is not str or inputs is None:
        raise ApiError(422, _BODY_HELP)
    use_cache = body.get("cache", True)
    return name, inputs, _budget(body), use_cache is not False


def _entity_inputs(agent: ApiPorts, body: dict[str, Any]) -> tuple[list[list[float]], list[str]]:
    """Assemble the model's input row from the feature cache for the given entity keys."""
    from edge_agent.features.feature_cache import FeatureUnavailable

    model = agent.models.get(str(body.get("model")))
    if model is None:
        raise ApiError(404, f"unknown model {body.get('model')!r}")
    ref = model.manifest.feature_schema
    if ref is None:
        raise ApiError(422, f"model {model.name!r} names no feature schema; send 'inputs'")
    entity = body["entity"]
    if type(entity) is not dict:
        raise ApiError(422, '\'entity\' must be an object of entity keys, e.g. {"barn_id": "b1"}')
    try:
        vector, flags = agent.features.vector(ref.name, entity)
    except FeatureUnavailable as exc:
        raise ApiError(409, f"feature unavailable: {exc}") from None
    except KeyError as exc:
        raise ApiError(422, f"missing entity key {exc}") from None
    return [vector.tolist()], list(flags)


def build_api(agent: ApiPorts) -> LocalApi:
    api = LocalApi()
    router = agent.router
    state = agent.status

    document = orjson.dumps(openapi_document())

    @api.route("GET", "/openapi.json")
    async def openapi(req: Request) -> Response:
        return Response(document)

    kserve_v2.add_routes(api, router, agent.models, state.ready)  # /v2/... (Triton clients)

    @api.route("GET", "/health")
    async def health(req: Request) -> Response:
        return json_response({"status": "ok", "device_id": agent.device_id})

    @api.route("GET", "/ready")
    async def ready(req: Request) -> Response:
        ok, why = state.ready()
        return json_response({"ready": ok, "reason": why}, 200 if ok else 503)

    @api.route("GET", "/api/v1/models")
    async def list_models(req: Request) -> Response:
        return json_response({"models": [_model_info(agent, m) for m in agent.models.all()]})

    @api.route("GET", "/api/v1/models/{name}")
    async def get_model(req: Request) -> Response:
        m = agent.models.get(req.params["name"])
        if m is None:
            raise ApiError(
                404,
                f"unknown model {req.params['name']!r}",
                known=[x.name for x in agent.models.all()],
            )
        prev = agent.store.previous(m.name)
        info = _model_info(agent, m)
        info["manifest"] = m.manifest.model_dump(mode="json")
        info["previous_version"] = prev.version if prev else None
        info["routing"] = router.snapshot()["models"].get(m.name)
        return json_response(info)

    @api.route("POST", "/api/v1/inference")
    async def infer(req: Request) -> Response:
        body = req.json()
        flags = None
        if type(body) is dict and "inputs" not in body and "entity" in body:
            body["inputs"], flags = _entity_inputs(agent, body)
        name, inputs, budget, use_cache = _request_fields(body)
        try:
            res = await router.infer(name, inputs, budget_ms=budget, use_cache=use_cache)
        except RoutingError as exc:
            raise api_error(exc) from None
        out = res.as_dict()
        if flags is not None:
            out["feature_flags"] = flags
        return Response(orjson.dumps(out, option=_OPT))

    @api.route("GET", "/api/v1/features")
    async def features(req: Request) -> Response:
        """The feature cache for some entities, e.g. ?barn_id=b1&flock_id=f7[&schema=barn]."""
        from urllib.parse import parse_qsl

        query = dict(parse_qsl(req.query.decode("latin-1")))
        schema = query.pop("schema", "barn")
        try:
            items = agent.features.inspect(schema, query)
        except KeyError:
            raise ApiError(404, f"unknown feature schema {schema!r}") from None
        return json_response({"schema": schema, "entities": query, "features": items})

    @api.route("POST", "/api/v1/feedback")
    async def feedback(req: Request) -> Response:
        """Ground truth arriving later (weighed birds...) for concept-drift detection."""
        # Off the loop: a detector state change is queued in the outbox (an fsync).
        status, doc = await asyncio.to_thread(agent.feedback, req.body)
        return json_response(doc, status)

    @api.route("POST", "/api/v1/inference/batch")
    async def infer_batch(req: Request) -> Response:
        body = req.json()
        reqs = body.get("requests") if type(body) is dict else None
        if type(reqs) is not list or not reqs:
            raise ApiError(422, 'body must be {"requests": [{"model": ..., "inputs": ...}, ...]}')
        if len(reqs) > MAX_BATCH_REQUESTS:
            raise ApiError(
                413, f"batch of {len(reqs)} requests exceeds the limit {MAX_BATCH_REQUESTS}"
            )

        async def one(i: int, item: Any) -> dict[str, Any]:
            try:
                name, inputs, budget, use_cache = _request_fields(item)
                res = await router.infer(name, inputs, budget_ms=budget, use_cache=use_cache)
                return {"index": i, "status": 200, **res.as_dict()}
            except ApiError as exc:
                return {"index": i, "status": exc.status, "error": exc.message}
            except RoutingError as exc:
                err = api_error(exc)
                return {"index": i, "status": err.status, "error": err.message, **err.extra}

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
        ok = sum(1 for r in results if r["status"] == 200)
        return Response(
            orjson.dumps({"ok": ok, "failed": len(results) - ok, "results": results}, option=_OPT)
        )

    @api.route("GET", "/api/v1/metrics")
    async def metrics(req: Request) -> Response:
        return json_response(router.snapshot())

    @api.route("POST", "/api/v1/models/warmup")
    async def warmup(req: Request) -> Response:
        body = req.json() if req.body else {}
        if not isinstance(body, dict):
            raise ApiError(422, _WARMUP_HELP)
        names = body.get("models")
        one = body.get("model")  # {"model": name} warms that one model (issue 18)
        if one is not None:
            if not isinstance(one, str) or names is not None:
                raise ApiError(422, _WARMUP_HELP)
            names = [one]
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise ApiError(422, _WARMUP_HELP)
        runs = body.get("runs", 5)
        if type(runs) is not int or not 1 <= runs <= 1000:
            raise ApiError(422, "runs must be an integer from 1 to 1000")
        try:
            return json_response({"warmed": await router.warmup(names, runs)})
        except RoutingError as exc:
            raise api_error(exc) from None

    @api.route("GET", "/api/v1/resources/status")
    async def resources(req: Request) -> Response:
        return json_response(agent.resources())

    @api.route("POST", "/api/v1/cache/clear")
    async def cache_clear(req: Request) -> Response:
        body = req.json() if req.body else {}
        model = body.get("model") if isinstance(body, dict) else None
        if model is not None and not isinstance(model, str):
            raise ApiError(422, '"model" must be a model name')
        return json_response({"cleared": router.clear_cache(model), "model": model})

    @api.route("GET", "/api/v1/escalations")
    async def escalations(req: Request) -> Response:
        store = router.escalations
        if store is None:
            return json_response({"entries": [], "stats": None})
        return json_response({"stats": store.stats(), "entries": store.entries(limit=100)})

    @api.route("POST", "/api/v1/models/{name}/rollback")
    async def rollback(req: Request) -> Response:
        name = req.params["name"]
        if agent.models.get(name) is None:
            raise ApiError(404, f"unknown model {name!r}")
        result = await agent.installs.rollback(name)  # announces the swap, publishes state
        if result.code == "rollback-failed":  # the kept version failed to load
            raise ApiError(409, f"rollback of {name!r} failed, still serving: {result.reason}")
        return json_response(result.as_dict(), 200 if result.ok else 409)

    @api.route("GET", "/api/v1/status")
    async def status(req: Request) -> Response:
        return json_response(state.status())

    return api


def _model_info(agent: ApiPorts, m: Any) -> dict[str, Any]:
    return {
        "name": m.name,
        "version": m.version,
        "bundle_id": m.manifest.bundle_id,
        "runtime": m.manifest.runtime,
        "providers": getattr(m.runtime, "providers", None),
        "task": m.manifest.task,
        "warm": m.warm,
        "loaded_at": m.loaded_at,
        "inputs": [s.model_dump() for s in m.manifest.inputs],
        "outputs": [s.model_dump() for s in m.manifest.outputs],
        "serving": m.manifest.serving.model_dump(),
    }
