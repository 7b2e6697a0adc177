"""The agent's local API as an OpenAPI 3.0 document, served at ``GET /openapi.json``.

Written by hand next to the routes (edge_agent/api/api_routes.py, kserve_v2.py): the local
API is a bare ASGI app for speed (docs/inference.md), so no framework generates it.
tests/inference/test_openapi_kserve.py runs schemathesis against a live agent's document.
"""

from __future__ import annotations

from typing import Any

from farmiq import __version__

_OBJ: dict[str, Any] = {"type": "object"}
_ERR = {"description": "what is wrong", "content": {"application/json": {"schema": _OBJ}}}


def _ok(desc: str = "OK", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema or _OBJ}}}


def _op(summary: str, *, body: dict[str, Any] | None = None, errors: tuple[int, ...] = (),
        ok: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        required: bool = True) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok or _ok()}}
    for code in errors:
        op["responses"][str(code)] = _ERR
    if body is not None:
        op["requestBody"] = {
            "required": required,
            "content": {"application/json": {"schema": body}},
        }
    if params:
        op["parameters"] = params
    return op


_NAME = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
_ROWS = {
    "oneOf": [
        {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        {"type": "object", "additionalProperties": {"type": "array"}},
    ]
}
_INFER = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "inputs": _ROWS,
        "entity": {"type": "object", "additionalProperties": {"type": "string"}},
        "latency_budget_ms": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        "cache": {"type": "boolean"},
    },
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "INT32", "INT64", "FP32", "FP64"]},
        "data": {"type": "array"},
        "parameters": _OBJ,
    },
}
_V2_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": _OBJ},
        "parameters": _OBJ,
    },
}


def openapi_document() -> dict[str, Any]:
    ready_errors = (503,)
    infer_errors = (400, 404, 409, 413, 422, 503, 504)
    paths: dict[str, dict[str, Any]] = {
        "/health": {"get": _op("Liveness")},
        "/ready": {"get": _op("Readiness: models loaded and warm", errors=ready_errors)},
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
        "/openapi.json": {"get": _op("This document")},
        "/api/v1/models": {"get": _op("Installed models")},
        "/api/v1/models/{name}": {"get": _op("One model", errors=(404,), params=_NAME)},
        "/api/v1/models/{name}/rollback": {
            "post": _op("Serve the kept previous version", errors=(404, 409), params=_NAME)
        },
        "/api/v1/models/warmup": {
            "post": _op(
                "Warm models up and re-measure them",
                body={
                    "type": "object",
                    "properties": {
                        "model": {"type": "string"},
                        "models": {"type": "array", "items": {"type": "string"}},
                        "runs": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                },
                errors=(400, 404, 422),
                required=False,
            )
        },
        "/api/v1/inference": {
            "post": _op("Run a model (routed: edge, MCU, cloud)", body=_INFER, errors=infer_errors)
        },
        "/api/v1/inference/batch": {
            "post": _op(
                "Several inference requests at once",
                body={
                    "type": "object",
                    "required": ["requests"],
                    "properties": {"requests": {"type": "array", "items": _INFER}},
                },
                errors=(400, 413, 422),
            )
        },
        "/api/v1/feedback": {
            "post": _op(
                "Ground truth for concept-drift detection",
                body={
                    "type": "object",
                    "properties": {
                        "model": {"type": "string"},
                        "prediction": {},
                        "truth": {},
                        "kind": {"type": "string", "enum": ["classification", "regression"]},
                        "items": {"type": "array", "items": _OBJ},
                    },
                },
                errors=(400,),
            )
        },
        "/api/v1/features": {
            "get": _op(
                "The feature cache for some entities",
                params=[
                    {"name": "schema", "in": "query", "schema": {"type": "string"}},
                    {"name": "barn_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "flock_id", "in": "query", "schema": {"type": "string"}},
                ],
                errors=(404, 422),
            )
        },
        "/api/v1/metrics": {"get": _op("Routing statistics")},
        "/api/v1/resources/status": {"get": _op("CPU, memory, disk, queues, links")},
        "/api/v1/cache/clear": {
            "post": _op(
                "Drop cached answers",
                body={"type": "object", "properties": {"model": {"type": "string"}}},
                errors=(400, 422),
                required=False,
            )
        },
        "/api/v1/escalations": {"get": _op("Low-confidence inputs kept for re-check")},
        "/api/v1/status": {"get": _op("Readiness, broker, last install, reported state")},
        # KServe v2 / Open Inference Protocol (edge_agent/api/kserve_v2.py)
        "/v2": {"get": _op("Server metadata")},
        "/v2/health/live": {"get": _op("Server live")},
        "/v2/health/ready": {"get": _op("Server ready", errors=ready_errors)},
        "/v2/models/{name}": {"get": _op("Model metadata", errors=(404,), params=_NAME)},
        "/v2/models/{name}/ready": {"get": _op("Model ready", errors=(404, 503), params=_NAME)},
        "/v2/models/{name}/infer": {
            "post": _op(
                "Inference (JSON, or the binary tensor extension)",
                body=_V2_INFER,
                errors=(400, 404, 503, 504),
                params=_NAME,
            )
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "FarmIQ gateway agent", "version": __version__},
        "paths": paths,
    }
