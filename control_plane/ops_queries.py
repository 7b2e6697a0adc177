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
            }
        )
    return out


# -- drift --------------------------------------------------------------------------------
def drift(ctx: ControlPlaneContext, max_models: int = 5) -> list[dict[str, Any]]:
    """Per monitored model: a feature-by-device matrix of PSI and verdicts."""
    try:
        from control_plane.drift.setup import get_area

        area = get_area(ctx)
        models = area.service.models()[:max_models]
    except Exception as exc:  # area absent or not set up: no heatmap, never a broken page
        log.info("drift status unavailable: %s", exc)
        return []
    out: list[dict[str, Any]] = []
    for model in models:
        try:
            an, meta = area.service.analyze(model, level="device")
        except KeyError:
            out.append(
                {
                    "model": model,
                    "status": "no_reference",
                    "features": [],
                    "devices": [],
                    "ranked": [],
                }
            )
            continue
        except Exception as exc:
            log.warning("drift analysis of %s failed: %s", model, exc)
            continue
        features = list(an.columns[: an.n_features])
        from control_plane.drift.thresholds import STATUS_NAMES

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
        out.append(
            {
                "model": model,
                "version": meta.get("version"),
                "status": "drift" if drifted_devices else ("ok" if an.labels else "no_data"),
                "features": features,
                "devices": list(an.labels),
                "ranked": sorted(an.labels, key=lambda d: _drift_rank(cells[d])),
                "drifted_devices": drifted_devices,
                "cells": cells,
            }
        )
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
