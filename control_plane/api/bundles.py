"""Signed bundles the control plane has built (what rollouts and deployments ship)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.registry import RegistryError
from control_plane.security.audit_trail import audits
from control_plane.tables import BundleRecord

router = APIRouter(prefix="/api/v1/bundles", tags=["bundles"])


def _row(b: BundleRecord) -> dict[str, Any]:
    return {
        "bundle_id": b.bundle_id,
        "name": b.name,
        "version": b.version,
        "sha256": b.sha256,
        "size": b.size,
        "registry_uri": b.registry_uri,
        "targeting": b.targeting,
        "created": b.created,
    }


class BuildRequest(BaseModel):
    model: str
    version: int | None = Field(default=None, ge=1, description="default: the production alias")
    hardware: list[str] = Field(default=[], description="hardware classes the bundle is signed for")


@router.get("", summary="Bundles built, newest first")
async def list_bundles(
    model: str | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
    ctx: ControlPlaneContext = Depends(get_ctx),
) -> dict[str, Any]:
    def q() -> list[dict[str, Any]]:
        with ctx.session() as s:
            stmt = select(BundleRecord).order_by(BundleRecord.created.desc()).limit(limit)
            if model:
                stmt = stmt.where(BundleRecord.name == model)
            return [_row(b) for b in s.scalars(stmt)]

    return {"bundles": await run_in_threadpool(q)}


def _bundle_state(bundle_id: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """What the audit log keeps of a bundle: its record (id, version, sha256, targeting)."""
    with args["ctx"].session() as s:
        b = s.get(BundleRecord, bundle_id)
        return _row(b) if b is not None else None


@router.post("", summary="Build and sign a bundle from a registry version")
@audits("bundle.build", "{result[bundle_id]}", snapshot=_bundle_state)
async def build(body: BuildRequest, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    def go() -> dict[str, Any]:
        mv = ctx.registry.resolve(body.model, body.version)
        rec, _ = ctx.bundles.build(
            body.model, mv.version, targeting={"hardware": body.hardware} if body.hardware else None
        )
        return _row(rec)

    try:
        return await run_in_threadpool(go)
    except RegistryError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except ValueError as exc:  # the registered version's metadata cannot make a bundle
        raise HTTPException(
            422, f"cannot build a bundle of {body.model}: {_one_line(exc)}"
        ) from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@router.get("/{bundle_id}", summary="One bundle's record")
async def get_bundle(bundle_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> dict[str, Any]:
    def q() -> dict[str, Any] | None:
        with ctx.session() as s:
            b = s.get(BundleRecord, bundle_id)
            return _row(b) if b else None

    row = await run_in_threadpool(q)
    if row is None:
        raise HTTPException(404, f"no bundle {bundle_id!r}")
    return row


@router.get(
    "/{bundle_id}/download",
    summary="The signed bundle bytes (application/octet-stream)",
    response_class=Response,
)
async def download(bundle_id: str, ctx: ControlPlaneContext = Depends(get_ctx)) -> Response:
    got = await run_in_threadpool(ctx.bundles.load, bundle_id)
    if got is None:
        raise HTTPException(404, f"no bundle {bundle_id!r}")
    return Response(got[1], media_type="application/octet-stream")
