"""The specification's model-registry API, on MLflow."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, field_validator

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.registry import RESERVED_MODEL_NAMES, RegistryError
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1/models", tags=["registry"])

MAX_MODEL_BYTES = 256 * 1024 * 1024


class RegisterUri(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    source_uri: str = Field(min_length=1, max_length=4096)
    task: str = "classification"
    labels: list[str] | None = None
    feature_names: list[str] | None = None
    feature_schema: dict[str, str] | None = None
    serving: dict[str, Any] | None = Field(
        default=None, description="serving defaults: targets, max_batch, ... (validated now)"
    )
    runtime: str | None = Field(
        default=None, description="onnxruntime, litert or mcu-tflite (default: the model's)"
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_MODEL_NAMES:
            raise ValueError(f"{name!r} is reserved: GET /api/v1/models/{name} lists models")
        return name


class Promote(BaseModel):
    version: int = Field(ge=1)
    alias: str = Field(
        default="production",
        description="MLflow alias: lowercase letters, digits, '_', '-'; not 'latest' or 'v<n>'",
    )


def _model_state(name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """What promote/archive/restore change: the aliases (and the archived flag)."""
    ctx: ControlPlaneContext = args["ctx"]
    try:
        m = ctx.registry.get(name)
    except RegistryError:
        return None
    return {"aliases": m["aliases"], "archived": m["archived"]}


def _version_state(target: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """What a registration creates: the new version (``target`` is ``name@version``)."""
    name, _, version = target.rpartition("@")
    ctx: ControlPlaneContext = args["ctx"]
    try:
        versions = ctx.registry.get(name)["versions"]
    except RegistryError:
        return None
    for v in versions:
        if str(v["version"]) == version:
            return {"version": v["version"], "source": v["source"], "aliases": v["aliases"]}
    return None


def _err(exc: RegistryError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


# The body is read by hand (an upload or JSON), so its schema is declared here for OpenAPI.
_REGISTER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name", "file"],
                    "properties": {
                        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"},
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "ONNX (ZipMap outputs are converted) or TFLite",
                        },
                        "meta": {
                            "type": "string",
                            "description": "JSON object: task, labels, feature_names, ...",
                        },
                        "reference": {
                            "type": "string",
                            "format": "binary",
                            "description": "drift reference statistics (JSON object)",
                        },
                    },
                }
            },
            "application/json": {"schema": RegisterUri.model_json_schema()},
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such model or version"},
    409: {"description": "the model is archived"},
    413: {"description": "model file too large"},
    422: {"description": "invalid input; the detail says which"},
}


@router.post(
    "/register",
    summary="Register a model (ONNX/TFLite upload or an MLflow model URI), gated for gateways",
    openapi_extra=_REGISTER_BODY,
    responses=_ERRORS,
)
@audits("model.register", "{result[name]}@{result[version]}", snapshot=_version_state)
async def register(request: Request, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            name = str(form.get("name") or "")
            if not isinstance(upload, UploadFile) and not hasattr(upload, "read"):
                raise HTTPException(422, "multipart body needs a 'file' part with the ONNX model")
            data = await upload.read()  # type: ignore[union-attr]
            if len(data) > MAX_MODEL_BYTES:
                raise HTTPException(413, "model file too large")
            meta = json.loads(str(form.get("meta") or "{}"))
            if not isinstance(meta, dict):
                raise ValueError("'meta' must be a JSON object")
            ref_part = form.get("reference")
            reference = None
            if ref_part is not None:
                raw = await ref_part.read() if hasattr(ref_part, "read") else str(ref_part).encode()
                reference = json.loads(raw)
                if not isinstance(reference, dict):
                    raise ValueError("'reference' must be a JSON object")
            RegisterUri(name=name, source_uri="upload")  # validates the name
            mv = await run_in_threadpool(
                ctx.registry.register_onnx, name, data, meta=meta, reference=reference
            )
        else:
            body = RegisterUri.model_validate(await request.json())
            meta = body.model_dump(exclude={"name", "source_uri"}, exclude_none=True)
            mv = await run_in_threadpool(
                ctx.registry.register_uri, body.name, body.source_uri, meta=meta
            )
    except RegistryError as exc:
        raise _err(exc) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"invalid registration: {exc}") from None
    except RecursionError:  # json.loads on absurdly nested input
        raise HTTPException(422, "invalid registration: JSON nested too deeply") from None
    return mv.as_dict()


@router.get("/production", summary="Models with a production version")
async def production(ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return {"models": [m.as_dict() for m in await run_in_threadpool(ctx.registry.production)]}


@router.get("", summary="All registered models")
async def list_models(
    include_archived: bool = False, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    return {"models": await run_in_threadpool(ctx.registry.list_models, include_archived)}


@router.get("/{name}", summary="A model with its versions and aliases", responses=_ERRORS)
async def get_model(name: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        return await run_in_threadpool(ctx.registry.get, name)
    except RegistryError as exc:
        raise _err(exc) from None


@router.put(
    "/{name}/promote",
    summary="Point an alias (default: production) at a version",
    responses=_ERRORS,
)
@audits("model.promote", "{name}", snapshot=_model_state)
async def promote(
    name: str, body: Promote, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    try:
        mv = await run_in_threadpool(ctx.registry.promote, name, body.version, body.alias)
    except RegistryError as exc:
        raise _err(exc) from None
    if body.alias == "production":
        await run_in_threadpool(ctx.promoted, name, body.version)
    return mv.as_dict()


@router.delete(
    "/{name}", summary="Archive a model (reversible; nothing is deleted)", responses=_ERRORS
)
@audits("model.archive", "{name}", snapshot=_model_state)
async def archive(name: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        return await run_in_threadpool(ctx.registry.archive, name)
    except RegistryError as exc:
        raise _err(exc) from None


@router.post("/{name}/restore", summary="Undo an archive, restoring its aliases", responses=_ERRORS)
@audits("model.restore", "{name}", snapshot=_model_state)
async def restore(name: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    try:
        return await run_in_threadpool(ctx.registry.restore, name)
    except RegistryError as exc:
        raise _err(exc) from None


__all__ = ["File", "Form", "router"]
