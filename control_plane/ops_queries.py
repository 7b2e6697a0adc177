"""Read-only queries behind the operator dashboard and the control plane's /metrics.

Each area owns its tables (control_plane.tables, control_plane.rollout.tables,
control_plane.drift.*); these functions read them and tolerate an area that is not
installed (its module missing) or not migrated yet (its table missing): they return empty
results rather than fail the whole page or scrape.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from control_plane.context import ControlPlaneContext

log = logging.getLogger(__name__)

# A device is "online" when it says so and has been heard from recently.
ONLINE_WITHIN_S = 600.0


def _table(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _safe(default: Any):  # type: ignore[no-untyped-def]
    def deco(fn):  # type: ignore[no-untyped-def]
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except (SQLAlchemyError, KeyError, ValueError) as exc:
                log.warning("%s unavailable: %s", fn.__name__, exc)
                return default() if callable(default) else default

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return deco


# -- fleet --------------------------------------------------------------------------------
@_safe(list)
def fleet(ctx: ControlPlaneContext) -> list[dict[str, Any]]:
    """Every known device: identity, online state, health, installed model versions."""
    from control_plane.tables import Device

    health_t = _table("control_plane.rollout.tables", "DeviceHealth")
    now = time.time()
    with ctx.session() as s:
        devices = list(s.scalars(select(Device).order_by(Device.farm_id, Device.device_id)))
        health: dict[str, Any] = {}
        if health_t is not None:
            try:
                health = {h.device_id: h for h in s.scalars(select(health_t))}
            except SQLAlchemyError:
                s.rollback()
    out = []
    for d in devices:
        rep = d.reported or {}
        models = {
            name: (info or {}).get("version") for name, info in (rep.get("models") or {}).items()
        }
        h = health.get(d.device_id)
        hdoc = (h.health or {}) if h is not None else {}
        online = d.status == "online" and now - (d.last_seen or 0) < ONLINE_WITHIN_S
        out.append(
            {
                "device_id": d.device_id,
                "farm_id": d.farm_id,
                "status": "online"
                if online
                else ("offline" if d.status != "unknown" else "unknown"),
                "last_seen": d.last_seen,
                "agent_version": rep.get("agent_version"),
                "hardware_class": rep.get("hardware_class"),
                "tags": rep.get("tags") or [],
                "models": models,
                "health": _health_summary(hdoc, online),
            }
        )
    return out


def _health_summary(doc: dict[str, Any], online: bool) -> dict[str, Any]:
    """Boil a device's health report down to ok / degraded / unknown with a reason."""
    if not doc:
        return {"state": "unknown" if not online else "ok", "detail": "no health report"}
    problems = []
    for model, m in (
        (doc.get("models") or {}).items() if isinstance(doc.get("models"), dict) else []
    ):
        if not isinstance(m, dict):
            continue
        err = m.get("error_rate")
        if isinstance(err, int | float) and err > 0.05:
            problems.append(f"{model}: {err:.0%} errors")
    if doc.get("ready") is False:
        problems.append(str(doc.get("reason") or "not ready"))
    return {"state": "degraded" if problems else "ok", "detail": "; ".join(problems) or "healthy"}


FAILURE_STATES = ("failed", "rejected", "rolling_back", "rolled_back")
DONE_STATES = ("installed", "shadowing", "shadow")
FINAL_ROLLOUT = ("succeeded", "failed", "aborted", "rolled_back")
FAILURES_SHOWN = 10  # per wave


# -- rollouts -----------------------------------------------------------------------------
@_safe(list)
def rollouts(ctx: ControlPlaneContext, limit: int = 20) -> list[dict[str, Any]]:
    """Recent rollouts, newest first, with per-wave device counts by status."""
    rollout_t = _table("control_plane.rollout.tables", "Rollout")
    wave_t = _table("control_plane.rollout.tables", "RolloutWave")
    dev_t = _table("control_plane.rollout.tables", "RolloutDevice")
    if rollout_t is None:
        return []
    with ctx.session() as s:
        rows = list(s.scalars(select(rollout_t).order_by(rollout_t.created.desc()).limit(limit)))
        ids = [r.id for r in rows]
        waves: dict[str, list[Any]] = defaultdict(list)
        counts: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        failures: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        installed_at: dict[str, list[float]] = defaultdict(list)
        if ids and wave_t is not None:
            for w in s.scalars(
                select(wave_t).where(wave_t.rollout_id.in_(ids)).order_by(wave_t.index)
            ):
                waves[w.rollout_id].append(w)
        if ids and dev_t is not None:
            q = (
                select(dev_t.rollout_id, dev_t.wave, dev_t.status, func.count())
                .where(dev_t.rollout_id.in_(ids))
                .group_by(dev_t.rollout_id, dev_t.wave, dev_t.status)
            )
            for rid, wave, status, n in s.execute(q):
                counts[(rid, wave)][status] += n
            # The devices' own words for a failure (install ack code and reason).
            for d in s.scalars(
                select(dev_t).where(
                    dev_t.rollout_id.in_(ids),
                    dev_t.code.is_not(None),
                    dev_t.status.in_(FAILURE_STATES),
                )
            ):
                if len(failures[(d.rollout_id, d.wave)]) < FAILURES_SHOWN:
                    failures[(d.rollout_id, d.wave)].append(
                        {"device_id": d.device_id, "status": d.status, "code": d.code,
                         "reason": d.reason}
                    )  # fmt: skip
            # Progress over time: when each device reached "installed".
            q2 = select(dev_t.rollout_id, dev_t.updated).where(
                dev_t.rollout_id.in_(ids), dev_t.status.in_(DONE_STATES)
            )
            for rid, updated in s.execute(q2):
                installed_at[rid].append(float(updated or 0))
    out = []
    for r in rows:
        wl = []
        for w in waves.get(r.id, []):
            c = counts.get((r.id, w.index), Counter())
            total = sum(c.values())
            done = c.get("installed", 0) + c.get("shadowing", 0) + c.get("shadow", 0)
            wl.append(
                {
                    "index": w.index,
                    "percent": w.percent,
                    "mode": w.mode,
                    "status": w.status,
                    "devices": total,
                    "by_status": dict(c),
                    "done": done,
                    "failed": c.get("failed", 0) + c.get("rejected", 0),
                    "progress": round(done / total, 4) if total else 0.0,
                    "gate": w.gate_result or None,
                    "failures": failures.get((r.id, w.index), []),
                }
            )
        total = sum(w["devices"] for w in wl)
        done = sum(w["done"] for w in wl)
        out.append(
            {
                "id": r.id,
                "model": r.model,
                "version": r.version,
                "status": r.status,
                "current_wave": r.current_wave,
                "reason": r.reason,
                "created": r.created,
                "updated": r.updated,
                "waves": wl,
                "devices": total,
                "done": done,
                "progress": round(done / total, 4) if total else 0.0,
                # Waves are numbered from 0 everywhere (API, events, reasons, metrics).
                "waves_total": len(wl),
                "waves_done": sum(w["status"] == "succeeded" for w in wl),
                "wave_now": None if r.status in FINAL_ROLLOUT else min(r.current_wave, len(wl) - 1),
                "progress_history": _progress_steps(sorted(installed_at.get(r.id, [])), total, r),
            }
        )
    return out


def _progress_steps(times: list[float], total: int, r: Any) -> list[list[float]]:
    """[time, installed share] after each install, from the rollout's creation."""
    if not total:
        return []
    pts = [[round(float(r.created), 1), 0.0]]
    pts += [[round(t, 1), round((i + 1) / total, 4)] for i, t in enumerate(times)]
    return pts


# -- drift --------------------------------------------------------------------------------
PSI_HISTORY_BUCKETS = 12  # points per feature in the PSI-over-time plot


def _versions_with_traffic(area: Any, model: str, since: float) -> list[str]:
    """Every version of ``model`` that sent drift windows in the period, newest first:
    drift stays visible for a version still serving on some gateways after another one
    became ``production``."""
    from control_plane.drift.tables import DriftWindow

    with area.service.session() as s:
        rows = s.execute(
            select(DriftWindow.version, func.max(DriftWindow.end))
            .where(DriftWindow.model == model, DriftWindow.end > since)
            .group_by(DriftWindow.version)
        ).all()
    return [str(v) for v, _ in sorted(rows, key=lambda r: -float(r[1] or 0))]


def drift(ctx: ControlPlaneContext, max_models: int = 5) -> list[dict[str, Any]]:
    """Per monitored model and per version serving traffic: a feature-by-device matrix of
    PSI and verdicts, the PSI thresholds, and the fleet's PSI per feature over time."""
    try:
        from control_plane.drift.ingest import DEFAULT_PERIOD_S
        from control_plane.drift.setup import get_area

        area = get_area(ctx)
        models = area.service.models()[:max_models]
    except Exception as exc:  # area absent or not set up: no heatmap, never a broken page
        log.info("drift status unavailable: %s", exc)
        return []
    out: list[dict[str, Any]] = []
    until = time.time()
    since = until - DEFAULT_PERIOD_S
    for model in models:
        try:
            versions: list[str | None] = list(_versions_with_traffic(area, model, since))
        except SQLAlchemyError as exc:
            log.warning("drift versions of %s unavailable: %s", model, exc)
            versions = []
        for version in versions or [None]:
            entry = _drift_entry(area, model, version, since, until)
            if entry is not None:
                out.append(entry)
    return out


def _drift_entry(
    area: Any, model: str, version: str | None, since: float, until: float
) -> dict[str, Any] | None:
    from control_plane.drift.thresholds import STATUS_NAMES

    try:
        an, meta = area.service.analyze(
            model, level="device", version=version, since=since, until=until
        )
    except KeyError:
        return {
            "model": model,
            "version": version,
            "status": "no_reference",
            "features": [],
            "devices": [],
            "ranked": [],
        }
    except Exception as exc:
        log.warning("drift analysis of %s v%s failed: %s", model, version, exc)
        return None
    features = list(an.columns[: an.n_features])
    th = area.service.thresholds.for_model(model)
    cells: dict[str, dict[str, Any]] = {}
    drifted_devices = 0
    for i, device in enumerate(an.labels):
        row = {}
        any_drift = False
        for j, f in enumerate(features):
            psi = float(an.values["psi"][i, j]) if "psi" in an.values else float("nan")
            verdict = STATUS_NAMES[int(an.verdict[i, j])]
            any_drift |= verdict == "drift"
            row[f] = {"psi": None if psi != psi else round(psi, 4), "verdict": verdict}
        drifted_devices += any_drift
        cells[device] = row
    return {
        "model": model,
        "version": meta.get("version"),
        "status": "drift" if drifted_devices else ("ok" if an.labels else "no_data"),
        "features": features,
        "devices": list(an.labels),
        "ranked": sorted(an.labels, key=lambda d: _drift_rank(cells[d])),
        "drifted_devices": drifted_devices,
        "cells": cells,
        "rows": int(an.rows.sum()) if len(an.labels) else 0,
        "psi_threshold": {f: th.level("psi", f).drift for f in features},
        "psi_warn": {f: th.level("psi", f).warn for f in features},
        "psi_history": _psi_history(area, model, version, features, meta),
    }


def _psi_history(
    area: Any, model: str, version: str | None, features: list[str], meta: dict[str, Any]
) -> dict[str, list[list[float]]]:
    """Fleet PSI per feature in equal buckets from the first window to the last one."""
    start, end = meta.get("start"), meta.get("end")
    out: dict[str, list[list[float]]] = {f: [] for f in features}
    if start is None or end is None:
        return out
    step = max((float(end) - float(start)) / PSI_HISTORY_BUCKETS, 60.0)
    t = float(start)
    while t < float(end):
        an, _ = area.service.analyze(model, level="fleet", version=version, since=t, until=t + step)
        if an.labels and "psi" in an.values:
            for j, f in enumerate(features):
                v = float(an.values["psi"][0, j])
                if v == v:
                    out[f].append([round(t + step, 1), round(v, 4)])
        t += step
    return out


def _drift_rank(row: dict[str, dict[str, Any]]) -> tuple[int, float]:
    """Gateways with drifting features first, then by their largest PSI."""
    drifting = sum(c["verdict"] == "drift" for c in row.values())
    worst = max((c["psi"] or 0.0 for c in row.values()), default=0.0)
    return (-drifting, -worst)


# -- models -------------------------------------------------------------------------------
def models(ctx: ControlPlaneContext) -> list[dict[str, Any]]:
    """Registered models with versions, aliases and their bundle history."""
    try:
        listed = ctx.registry.list_models()
    except Exception as exc:
        log.warning("registry unavailable: %s", exc)
        listed = []
    bundles = _bundle_history(ctx)
    out = []
    for m in listed:
        try:
            info = ctx.registry.get(m["name"])
        except Exception:
            info = {"versions": [], "aliases": m.get("aliases", {})}
        aliases = info.get("aliases", {})
        by_version = {int(v): a for a, v in aliases.items()}
        out.append(
            {
                "name": m["name"],
                "aliases": aliases,
                "latest_version": info.get("latest_version"),
                "versions": [
                    {
                        "version": v["version"],
                        "created": (v.get("created") or 0) / 1000,
                        "alias": by_version.get(int(v["version"])),
                        "source": v.get("source"),
                    }
                    for v in reversed(info.get("versions", []))
                ],
                "bundles": bundles.get(m["name"], [])[:10],
            }
        )
    return out


@_safe(dict)
def _bundle_history(ctx: ControlPlaneContext) -> dict[str, list[dict[str, Any]]]:
    from control_plane.tables import BundleRecord

    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with ctx.session() as s:
        for b in s.scalars(select(BundleRecord).order_by(BundleRecord.created.desc()).limit(200)):
            out[b.name].append(
                {
                    "bundle_id": b.bundle_id,
                    "version": b.version,
                    "size": b.size,
                    "created": b.created,
                }
            )
    return out


@_safe([])
def alerts(ctx: ControlPlaneContext, limit: int = 50) -> list[dict[str, Any]]:
    """The latest alerts this control plane raised (control_plane/alerts), newest first."""
    bus = ctx.services.get("alerts")
    if bus is None or bus.recent is None:
        return []
    return bus.recent.latest(limit)  # type: ignore[no-any-return]


def serving(ctx: ControlPlaneContext, limit: int = 12) -> list[dict[str, Any]]:
    """Requests per second, error rate and p99 over time per gateway and model."""
    history = ctx.services.get("ops_history")
    return [] if history is None else history.series(limit)  # type: ignore[no-any-return]
