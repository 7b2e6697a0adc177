"""Device registry queries: the per-device inventory by tag, farm, model version, health,
with desired next to reported state."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from control_plane.db import Database
from control_plane.rollout.tables import DesiredState, DeviceHealth
from control_plane.tables import Device

STALE_S = 300.0  # no word for this long: offline, whatever the last status said


def health_of(dev: Device, h: DeviceHealth | None, now: float) -> str:
    if dev.status == "offline" or now - (dev.last_seen or 0) > STALE_S:
        return "offline"
    if h is None:
        return "unknown"
    models = (h.health or {}).get("models") or {}
    if any((m or {}).get("error_rate", 0) > 0.05 for m in models.values()):
        return "degraded"
    if (h.transfer or {}).get("state") == "budget-exhausted":
        return "degraded"
    return "healthy"


def in_sync(reported: dict[str, Any], desired: dict[str, Any]) -> bool:
    have = {n: (m or {}).get("version") for n, m in (reported.get("models") or {}).items()}
    for name, d in (desired.get("models") or {}).items():
        if (
            d.get("mode", "install") == "install"
            and d.get("version") is not None
            and have.get(name) != d["version"]
        ):
            return False
    return True


def device_view(
    dev: Device, d: DesiredState | None, h: DeviceHealth | None, now: float
) -> dict[str, Any]:
    rep = dev.reported or {}
    return {
        "device_id": dev.device_id,
        "farm_id": dev.farm_id,
        "status": dev.status,
        "health": health_of(dev, h, now),
        "last_seen": dev.last_seen,
        "tags": rep.get("tags") or [],
        "hardware_class": rep.get("hardware_class"),
        "agent_version": rep.get("agent_version"),
        "models": {n: (m or {}).get("version") for n, m in (rep.get("models") or {}).items()},
        "feature_schemas": {
            n: (m or {}).get("feature_schema") for n, m in (rep.get("models") or {}).items()
        },
        "mcu": rep.get("mcu"),
        "resources": rep.get("resources") or (h.health.get("resources") if h else None),
        "link": rep.get("link"),
        "desired": d.doc if d else None,
        "in_sync": in_sync(rep, d.doc if d else {}),
        "inference": (h.health or {}).get("models") if h else None,
        "shadow": h.shadow if h else None,
        "transfer": h.transfer if h else None,
    }


def query_devices(
    db: Database,
    *,
    tag: str | None = None,
    farm: str | None = None,
    model: str | None = None,
    version: int | None = None,
    health: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    now = time.time()
    with db.session() as s:
        q = select(Device).order_by(Device.device_id)
        if farm:
            q = q.where(Device.farm_id == farm)
        devs = list(s.scalars(q))
        ids = [d.device_id for d in devs]
        desired = {
            r.device_id: r
            for r in s.scalars(select(DesiredState).where(DesiredState.device_id.in_(ids)))
        }
        hl = {
            r.device_id: r
            for r in s.scalars(select(DeviceHealth).where(DeviceHealth.device_id.in_(ids)))
        }
        out = []
        for dev in devs:
            v = device_view(dev, desired.get(dev.device_id), hl.get(dev.device_id), now)
            if tag and tag not in v["tags"]:
                continue
            if model and model not in v["models"]:
                continue
            if version is not None and (not model or v["models"].get(model) != version):
                continue
            if health and v["health"] != health:
                continue
            out.append(v)
            if len(out) >= limit:
                break
        return out


def get_device(db: Database, device_id: str) -> dict[str, Any] | None:
    with db.session() as s:
        dev = s.get(Device, device_id)
        if dev is None:
            return None
        return device_view(
            dev, s.get(DesiredState, device_id), s.get(DeviceHealth, device_id), time.time()
        )
