"""Which devices a rollout targets, and which wave each one lands in.

A device's place is a deterministic hash of (rollout id, device id) mapped to [0, 100):
wave k takes the devices whose bucket is below its cumulative percentage, so a device
stays in its wave however often the targets are resolved again, on any replica, after
any restart. Devices that appear later fall into whichever wave their bucket says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from control_plane.device_ids import DeviceId


class Targeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(default=[], description="devices carrying all of these tags")
    farms: list[str] = Field(default=[], description="devices of any of these farms")
    devices: list[DeviceId] = Field(
        default=[], description="explicit device ids (known or not yet seen)"
    )
    hardware: list[str] = Field(
        default=[], description="hardware classes (also signed into the bundle)"
    )
    percent: float = Field(default=100.0, gt=0, le=100, description="a stable share of the matches")


def bucket(salt: str, device_id: str) -> float:
    h = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 * 100.0


def matches(t: Targeting, device_id: str, reported: dict[str, Any], farm_id: str | None) -> bool:
    if t.devices and device_id in t.devices:
        return True
    if t.devices and not (t.tags or t.farms or t.hardware):
        return False
    tags = set(reported.get("tags") or [])
    if t.tags and not set(t.tags) <= tags:
        return False
    if t.farms and (farm_id or reported.get("farm_id")) not in t.farms:
        return False
    return not (t.hardware and reported.get("hardware_class") not in t.hardware)


def resolve(
    t: Targeting, model: str, fleet: Iterable[tuple[str, dict[str, Any], str | None]]
) -> list[str]:
    """Device ids targeted, from (device_id, reported, farm_id) rows plus explicit ids."""
    out = {d for d, rep, farm in fleet if matches(t, d, rep, farm)}
    out |= set(t.devices)
    if t.percent < 100:
        out = {d for d in out if bucket(f"pct:{model}", d) < t.percent}
    return sorted(out)


def assign_waves(rollout_id: str, devices: list[str], percents: list[float]) -> dict[str, int]:
    """device -> wave index. Each non-empty fleet puts at least one device in wave 0."""
    out: dict[str, int] = {}
    ranked = sorted(devices, key=lambda d: bucket(rollout_id, d))
    for d in ranked:
        b = bucket(rollout_id, d)
        out[d] = next((i for i, p in enumerate(percents) if b < p), len(percents) - 1)
    if ranked and percents and percents[0] > 0 and 0 not in out.values():
        out[ranked[0]] = 0
    return out
