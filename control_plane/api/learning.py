"""The learning loop's labelling queue: hard examples gateways kept, and their labels.

- ``GET /api/v1/learning/hard-examples/{model}?limit=100``: unlabelled hard examples,
  least confident first, with the counts (viewer);
- ``POST /api/v1/learning/hard-examples/{model}/labels`` ``{"labels": [{"id": 7, "truth":
  "high"}]}``: each becomes a labelled example of the model's training data (operator;
  audited: the counts before and after).

Answers 404 when the control plane runs no learning loop (no ``learning`` section in the
drift config): there is no queue to read or fill.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.learning.examples import ExampleError
from control_plane.learning.hard_examples import HardExampleStore
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1/learning", tags=["learning"])


def _store(ctx: ControlPlaneContext) -> HardExampleStore:
    store = ctx.services.get("hard_examples")
    if store is None:
        raise HTTPException(404, "no learning loop runs here (no 'learning' in the drift config)")
    return store  # type: ignore[no-any-return]


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int = Field(ge=1)
    truth: str = Field(min_length=1, max_length=128)


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[Label] = Field(min_length=1, max_length=10_000)


def _counts(model: str, args: dict[str, Any]) -> dict[str, int] | None:
    store = args["ctx"].services.get("hard_examples")
    return None if store is None else store.counts(model)  # type: ignore[no-any-return]


@router.get("/hard-examples/{model}", summary="Hard examples waiting for a label")
async def hard_examples(
    model: str,
    limit: int = Query(default=100, ge=1, le=1000),
    ctx: ControlPlaneContext = Depends(get_ctx),
) -> dict[str, Any]:
    store = _store(ctx)
    examples = await run_in_threadpool(store.pending, model, limit)
    return {"model": model, **await run_in_threadpool(store.counts, model), "examples": examples}


@router.post("/hard-examples/{model}/labels", summary="Label hard examples for retraining")
@audits("learning.label", "{model}", snapshot=_counts)
async def label(
    model: str, body: LabelsIn, ctx: ControlPlaneContext = Depends(get_ctx)
) -> dict[str, Any]:
    store = _store(ctx)
    try:
        return await run_in_threadpool(store.label, model, [x.model_dump() for x in body.labels])
    except ExampleError as exc:
        raise HTTPException(422, str(exc)) from exc
