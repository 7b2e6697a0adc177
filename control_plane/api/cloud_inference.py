"""The specification's cloud-inference view: models on the cloud Triton, readiness,
statistics, warm-up, and a manual publish. Under ``/api/v1/cloud/...`` (the registry owns
``/api/v1/models/*``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1/cloud", tags=["cloud inference"])


def _publisher(ctx: ControlPlaneContext) -> Any:
    pub = ctx.services.get("cloud_inference")
    if pub is None:
        raise HTTPException(
            503, "no cloud Triton configured (set triton_url in the control-plane settings)"
        )
    return pub


async def _guard(fn: Any, *args: Any) -> Any:
    """Triton's and the registry's answers as HTTP errors: unknown model or version 404,
    other refusals by Triton 502 (with its message), bad model data 422, Triton down 503."""
    from tritonclient.utils import InferenceServerException

    from control_plane.registry import RegistryError
    from control_plane.triton.publisher import TritonUnavailable

    try:
        return await run_in_threadpool(fn, *args)
    except TritonUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0] if exc.args else exc)) from None
    except RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except InferenceServerException as exc:
        msg = exc.message() or str(exc)
        unknown = any(
            w in msg.lower() for w in ("unknown model", "not found", "no version", "not available")
        )
        raise HTTPException(404 if unknown else 502, f"Triton: {msg}") from None
    except ValueError as exc:
        raise HTTPException(422, " ".join(str(exc).split())) from None


class Publish(BaseModel):
    version: int = Field(ge=1)


class Warmup(BaseModel):
    runs: int = Field(default=3, ge=1, le=100)


@router.get("/status", summary="Is the cloud Triton live and ready")
async def status(ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await run_in_threadpool(_publisher(ctx).server)  # type: ignore[no-any-return]


@router.get("/models", summary="Models in the cloud Triton's repository, with their state")
async def models(ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    pub = _publisher(ctx)
    return {"models": await _guard(pub.models), "published": pub.published}


@router.get("/models/{name}", summary="One model: readiness, config, metadata, statistics")
async def model(name: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _guard(_publisher(ctx).model, name)  # type: ignore[no-any-return]


@router.get("/models/{name}/stats", summary="Inference statistics per version")
async def stats(name: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    return {"model": name, "statistics": await _guard(_publisher(ctx).statistics, name)}


@router.post("/models/{name}/warmup", summary="Send zero inputs through the model")
async def warmup(
    name: str, body: Warmup | None = None, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    return await _guard(_publisher(ctx).warmup, name, (body or Warmup()).runs)  # type: ignore[no-any-return]


def _published(name: str, args: dict[str, Any]) -> Any:
    """The versions of ``name`` the control plane has put on the cloud Triton."""
    pub = args["ctx"].services.get("cloud_inference")
    return None if pub is None else pub.published.get(name)


@router.post("/models/{name}/publish", summary="Publish a registered version to Triton now")
@audits("cloud.publish", "{name}", snapshot=_published)
async def publish(
    name: str, body: Publish, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    pub = _publisher(ctx)

    def go() -> dict[str, Any]:
        ctx.registry.resolve(name, body.version)  # an unknown model or version: 404 here
        return pub.publish(name, body.version)  # type: ignore[no-any-return]

    return await _guard(go)  # type: ignore[no-any-return]
