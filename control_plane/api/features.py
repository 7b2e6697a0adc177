"""The specification's feature-store API, on Feast (see docs/features.md).

Route order matters: ``/list`` is declared before ``/{name}`` so it is not read as a name.
Handlers are plain functions: FastAPI runs them in its thread pool, so Feast's blocking
calls never stall the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from control_plane.api.input_guard import ApiDatetime
from control_plane.feature_store import FeastFeatureStore, publish_cloud_features
from control_plane.security.audit_trail import audits
from farmiq.features import DefinitionError, FeatureView

router = APIRouter(prefix="/api/v1/features", tags=["features"])

SERVICE = "features"


def get_feature_store(request: Request) -> FeastFeatureStore:
    ctx = getattr(request.app.state, "ctx", None)
    store = ctx.services.get(SERVICE) if ctx is not None else None
    if store is None:
        store = getattr(request.app.state, "feature_store", None)
    if store is None:
        raise HTTPException(503, "the feature store is not configured in this control plane")
    return store  # type: ignore[no-any-return]


class RegisterBody(BaseModel):
    views: list[dict[str, Any]] | None = Field(
        default=None,
        description="Extra feature views (same shape as GET /features/{view}); "
        "omit to register the built-in definitions from farmiq.features.",
    )


class ServingBody(BaseModel):
    entities: list[dict[str, str]] = Field(min_length=1, max_length=10_000)
    schema_name: str | None = Field(default=None, alias="schema")
    features: list[str] | None = None  # "view:feature" references


class MaterializeBody(BaseModel):
    start: ApiDatetime | None = None  # None: incremental from the last materialization
    end: ApiDatetime | None = None  # None: now
    views: list[str] | None = None


class ReadingsBody(BaseModel):
    readings: list[tuple[str, str, float, float]] = Field(max_length=1_000_000)


class RecordsBody(BaseModel):
    rows: list[dict[str, Any]] = Field(max_length=100_000)


class PublishBody(BaseModel):
    entities: dict[str, list[str]]  # e.g. {"flock_id": ["f7"]}


def _views_state(_: str, args: dict[str, Any]) -> dict[str, list[str]]:
    """The registered feature views, each with its feature names."""
    store: FeastFeatureStore = args["store"]
    return {n: sorted(f.name for f in v.features) for n, v in sorted(store.views.items())}


@router.post("/register", summary="Register feature views with Feast (apply)")
@audits("features.register", "features", snapshot=_views_state)
def register(
    body: RegisterBody | None = None, store: FeastFeatureStore = Depends(get_feature_store)
) -> dict[str, Any]:
    try:
        if body is None or not body.views:
            return store.apply()
        views = [FeatureView.from_dict(d) for d in body.views]
        return store.register_views(views)
    except (DefinitionError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/list", summary="List every feature with its view, window, TTL and rule")
def list_features(store: FeastFeatureStore = Depends(get_feature_store)) -> dict[str, Any]:
    return {
        "features": store.describe(),
        "schemas": {
            s.name: {"version": s.version, "features": list(s.features)}
            for s in store.schemas.values()
        },
    }


@router.get("/{name}", summary="A feature (name or view:feature), a view or a schema")
def get_feature(name: str, store: FeastFeatureStore = Depends(get_feature_store)) -> dict[str, Any]:
    hits = [d for d in store.describe() if name in (d["name"], d["ref"])]
    if len(hits) == 1:
        return {"kind": "feature", **hits[0]}
    if len(hits) > 1:
        raise HTTPException(409, f"{name!r} is ambiguous: use one of {[h['ref'] for h in hits]}")
    if name in store.views:
        return {"kind": "view", **store.views[name].to_dict()}
    if name in store.schemas:
        s = store.schemas[name]
        return {"kind": "schema", "version": s.version, **s.to_dict()}
    raise HTTPException(404, f"no feature, view or schema named {name!r}")


@router.post("/serving", summary="Online features for entity keys")
def serving(
    body: ServingBody, store: FeastFeatureStore = Depends(get_feature_store)
) -> dict[str, Any]:
    if (body.schema_name is None) == (body.features is None):
        raise HTTPException(422, "give exactly one of 'schema' or 'features'")
    target: Any = body.features
    version = None
    if body.schema_name is not None:
        schema = store.schemas.get(body.schema_name)
        if schema is None:
            raise HTTPException(404, f"unknown feature schema {body.schema_name!r}")
        target, version = schema, schema.version
    try:
        values = store.online_features(target, body.entities)
    except (KeyError, ValueError) as exc:
        raise HTTPException(422, f"cannot serve: {exc}") from None
    except Exception as exc:  # Feast raises its own hierarchy (FeastError subclasses)
        if type(exc).__module__.startswith("feast"):
            raise HTTPException(422, f"cannot serve: {exc}") from None
        raise
    return {"schema": body.schema_name, "version": version, "features": values}


@router.post("/materialize", summary="Load offline features into the online store")
def materialize(
    body: MaterializeBody | None = None, store: FeastFeatureStore = Depends(get_feature_store)
) -> dict[str, Any]:
    body = body or MaterializeBody()
    try:
        res = store.materialize(end=body.end, start=body.start, views=body.views)
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0])) from None
    except ValueError as exc:
        raise HTTPException(422, f"invalid materialization window: {exc}") from None
    return {
        "views": res.views,
        "start": res.start.isoformat() if res.start else None,
        "end": res.end.isoformat(),
    }


@router.post("/readings", summary="Append raw sensor readings to the offline store")
def readings(
    body: ReadingsBody, store: FeastFeatureStore = Depends(get_feature_store)
) -> dict[str, int]:
    return {"appended": store.ingest_readings(body.readings)}


@router.post("/records/{view}", summary="Append cloud-side records (e.g. flock_profile)")
def records(
    view: str, body: RecordsBody, store: FeastFeatureStore = Depends(get_feature_store)
) -> dict[str, int]:
    if view not in store.views:
        raise HTTPException(404, f"unknown feature view {view!r}")
    try:
        return {"appended": store.write_cloud_features(view, body.rows)}
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/publish/{gateway_id}", summary="Push cloud-side features to a gateway (MQTT)")
def publish(
    gateway_id: str,
    body: PublishBody,
    request: Request,
    store: FeastFeatureStore = Depends(get_feature_store),
) -> dict[str, Any]:
    ctx = getattr(request.app.state, "ctx", None)
    bus = getattr(ctx, "mqtt", None)
    if bus is None:
        raise HTTPException(503, "MQTT is not enabled in this control plane")
    try:
        payload = publish_cloud_features(store, bus, gateway_id, body.entities)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"gateway": gateway_id, "bytes": len(payload)}
