"""The drift and retraining API (the specification's endpoints, on fleet histograms)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from control_plane.context import ControlPlaneContext, get_ctx
from control_plane.drift.ingest import DEFAULT_PERIOD_S
from control_plane.drift.setup import DriftArea, get_area
from control_plane.drift.thresholds import METHODS
from control_plane.security.audit_trail import audits

router = APIRouter(prefix="/api/v1", tags=["drift"])

Level = Literal["device", "farm", "fleet"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def area(ctx: ControlPlaneContext = Depends(get_ctx)) -> DriftArea:
    return get_area(ctx)


class ReferenceIn(BaseModel):
    model: str = Field(pattern=NAME)
    version: str = "*"
    reference: dict[str, Any]


class Period(BaseModel):
    model: str = Field(pattern=NAME)
    version: str | None = None
    since: float | None = None
    until: float | None = None


class CheckIn(Period):
    method: Literal["psi", "ks", "wasserstein", "js", "chi2"] = "psi"
    feature: str | None = None
    level: Level = "fleet"
    device_id: str | None = None


class ComprehensiveIn(Period):
    level: Level = "fleet"
    device_id: str | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


class TriggerIn(Period):
    force: bool = False
    reason: str | None = Field(default=None, max_length=500)


def _missing(exc: KeyError) -> HTTPException:
    return HTTPException(404, str(exc.args[0]) if exc.args else "not found")


def _reference_state(model: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The baseline a model's drift is judged against: its version key and schema hash
    (the statistics themselves are large; the hash names them)."""
    body = args["body"]
    try:
        _, _, schema, version = args["a"].service.reference(model, body.version)
    except KeyError:
        return None
    return {"version": version, "schema": schema}


@router.post("/drift/reference", summary="Set a model's reference baseline (histograms)")
@audits("drift.reference.set", "{body.model}", snapshot=_reference_state)
async def set_reference(body: ReferenceIn, a: DriftArea = Depends(area)) -> dict[str, Any]:
    try:
        schema = await run_in_threadpool(
            a.service.set_reference, body.model, body.reference, body.version
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    return {"model": body.model, "version": body.version, "schema": schema}


@router.post("/detect/check", summary="One drift method over a period (per feature)")
async def check(body: CheckIn, a: DriftArea = Depends(area)) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        an, meta = a.service.analyze(
            body.model,
            level=body.level,
            version=body.version,
            since=body.since,
            until=body.until,
            device_ids=[body.device_id] if body.device_id else None,
        )
        groups = []
        for i in range(len(an.labels)):
            g = an.group(i, methods=(body.method,))
            feats = {
                **g["features"],
                **({"__prediction__": g["prediction"]} if g["prediction"] else {}),
            }
            if body.feature is not None:
                if body.feature not in feats:
                    raise KeyError(f"model {body.model!r} has no feature {body.feature!r}")
                feats = {body.feature: feats[body.feature]}
            groups.append(
                {
                    "id": g["id"],
                    "rows": g["rows"],
                    "features": {f: d["methods"].get(body.method) for f, d in feats.items()},
                    "drift_detected": any(
                        (d["methods"].get(body.method) or {}).get("status") == "drift"
                        for d in feats.values()
                    ),
                }
            )
        return {
            "model": body.model,
            "method": body.method,
            "level": body.level,
            "period": _period(meta),
            "groups": groups,
        }

    try:
        return await run_in_threadpool(run)
    except KeyError as exc:
        raise _missing(exc) from exc


@router.post("/detect/comprehensive", summary="All methods, all features, with verdicts")
async def comprehensive(body: ComprehensiveIn, a: DriftArea = Depends(area)) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        an, meta = a.service.analyze(
            body.model,
            level=body.level,
            version=body.version,
            since=body.since,
            until=body.until,
            device_ids=[body.device_id] if body.device_id else None,
        )
        th = a.service.thresholds.for_model(body.model)
        order = sorted(range(len(an.labels)), key=lambda i: -float(an.drifted_share()[i]))
        groups = [an.group(i, METHODS) for i in order[: body.limit]]
        return {
            "model": body.model,
            "level": body.level,
            "period": _period(meta),
            "drift_detected": any(g["drift_detected"] for g in groups),
            "groups_total": len(an.labels),
            "groups_drifted": sum(1 for g in groups if g["drift_detected"]),
            "thresholds": th.as_dict(an.columns),
            "groups": groups,
        }

    try:
        return await run_in_threadpool(run)
    except KeyError as exc:
        raise _missing(exc) from exc


@router.post("/retraining/decision", summary="Evaluate the retraining policy (stored)")
async def decision(body: Period, a: DriftArea = Depends(area)) -> dict[str, Any]:
    try:
        d = await run_in_threadpool(
            lambda: a.decider.decide(
                body.model, since=body.since, until=body.until, version=body.version
            )
        )
    except KeyError as exc:
        raise _missing(exc) from exc
    return d.to_dict()


def _retraining_state(model: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The model's latest retraining decision (``None``: there was none)."""
    a: DriftArea = args["a"]
    last = a.decider.history(model, 1)
    if not last:
        return None
    d = last[0]
    return {k: d[k] for k in ("id", "at", "retrain", "triggered", "mlflow_run_id")}


@router.post("/retraining/trigger", summary="Decide and, if due (or forced), start retraining")
@audits("retraining.trigger", "{body.model}", snapshot=_retraining_state)
async def trigger(body: TriggerIn, a: DriftArea = Depends(area)) -> dict[str, Any]:
    try:
        d = await run_in_threadpool(
            lambda: a.trigger.trigger(
                body.model, force=body.force, since=body.since, until=body.until, reason=body.reason
            )
        )
    except KeyError as exc:
        raise _missing(exc) from exc
    return d.to_dict()


@router.get("/retraining/decisions/{model}", summary="Stored decisions with their reasons")
async def decisions(
    model: str, limit: int = 50, a: DriftArea = Depends(area)
) -> list[dict[str, Any]]:
    return await run_in_threadpool(a.decider.history, model, min(max(limit, 1), 1000))


@router.get("/drift/models", summary="Monitored models with their fleet drift status")
async def models(a: DriftArea = Depends(area)) -> list[dict[str, Any]]:
    def run() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in a.service.models():
            try:
                an, meta = a.service.analyze(m, level="fleet")
            except KeyError:
                out.append({"model": m, "status": "no_reference"})
                continue
            s = an.summary(0) if an.labels else None
            out.append(
                {
                    "model": m,
                    "version": meta["version"],
                    "windows": meta["windows"],
                    "status": "no_data"
                    if s is None
                    else ("drift" if s["drift_detected"] else "ok"),
                    "fleet": s,
                }
            )
        return out

    return await run_in_threadpool(run)


@router.get(
    "/drift/expected-accuracy/{model}",
    summary="Label-free expected accuracy (calibrated confidences): fleet, gateways, windows",
)
async def expected_accuracy(
    model: str,
    version: str | None = None,
    since: float | None = None,
    until: float | None = None,
    a: DriftArea = Depends(area),
) -> dict[str, Any]:
    return await run_in_threadpool(
        a.service.expected_accuracy, model, version=version, since=since, until=until
    )


@router.get(
    "/drift/report/{model}",
    response_class=HTMLResponse,
    summary="Evidently report: gateway samples vs the reference sample",
)
async def report(
    model: str,
    since: float | None = None,
    until: float | None = None,
    device_id: str | None = None,
    a: DriftArea = Depends(area),
) -> HTMLResponse:
    from control_plane.drift import evidently_report

    def run() -> str:
        import datetime as dt

        _, ref, _, ref_version = a.service.reference(model)
        cols, rows, source = a.service.gateway_rows(
            model, since=since, until=until, device_id=device_id
        )
        end = time.time() if until is None else until
        start = end - DEFAULT_PERIOD_S if since is None else since

        def iso(t: float) -> str:
            return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")

        facts = {
            "model": model,
            "reference version": "any" if ref_version == "*" else ref_version,
            "gateway rows": len(rows),
            "gateway rows from": source,
            "period": f"{iso(start)} to {iso(end)}",
            "gateway": device_id or "all",
        }
        return evidently_report.report_html(
            ref, cols, rows, title=f"FarmIQ drift: {model}", facts=facts
        )

    try:
        return HTMLResponse(await run_in_threadpool(run))
    except KeyError as exc:
        raise _missing(exc) from exc
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc


def _period(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("since", "until", "start", "end", "windows", "schema_mismatch")}
