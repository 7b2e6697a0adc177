"""Malformed gateway reports are dropped where they arrive, so what rollouts read later
(health and shadow for gates, reported state for targeting) always has the right types.

Before, a gateway's ``{"models": "x"}`` health report was stored as it came and the
scheduler's gate evaluation raised on it at every tick: one broken gateway stalled its
rollout for good. These run the real ingest handlers on a real (SQLite) database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from control_plane.db import Database
from control_plane.deployments import DeploymentService
from control_plane.rollout import gates
from control_plane.rollout.ingest import RolloutIngest
from control_plane.rollout.tables import DeviceHealth
from control_plane.rollout.targeting import Targeting, resolve
from control_plane.tables import Device

GOOD_HEALTH = {"models": {"barn": {"version": 2, "requests": 100, "errors": 1, "p99_ms": 3.5}}}
GOOD_SHADOW = {"model": "barn", "candidate_version": 2, "rows": 50, "agree": 49}
GOOD_STATE = {"farm_id": "farm-a", "tags": ["north"], "hardware_class": "pi5", "models": {}}

BAD_HEALTH = [
    {"models": "x"},
    {"models": {"barn": 5}},
    {"models": {"barn": {"version": 2, "requests": "many"}}},
    {"models": {"barn": {"version": 2, "errors": {"n": 1}}}},
    {"models": {"barn": {"version": 2, "p99_ms": "slow"}}},
    {"models": {"barn": {"version": [2]}}},
    {"models": {"barn": {"version": 2, "requests": -5}}},
]
BAD_SHADOW = [
    {"model": "barn", "candidate_version": 2, "rows": "x"},
    {"model": "barn", "candidate_version": 2, "agree": []},
    {"model": "barn", "candidate_version": "two"},
]
BAD_STATE = [
    {"tags": 5},
    {"tags": [[1]]},
    {"farm_id": {"a": 1}},
    {"farm_id": "f" * 500},
    {"hardware_class": ["pi5"]},
    {"models": "x"},
    {"entities": [1]},
]
NOT_OBJECTS = [b"", b"\x00\xff", b"[]", b"null", b"42", b'"s"', b"{", b"[" * 5000 + b"]" * 5000]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'cp.db'}")
    d.create_all()
    return d


def _dump(doc: Any) -> bytes:
    return orjson.dumps(doc)


def _evaluate(db: Database, device: str) -> gates.GateResult:
    with db.session() as s:
        row = s.get(DeviceHealth, device)
        assert row is not None
        health, shadow = {device: row.health}, {device: row.shadow}
    t = gates.GateThresholds()
    statuses = {device: "installed"}
    gates.shadow_rows(shadow, "barn", 2)
    gates.evaluate(
        t, model="barn", version=2, mode="shadow", statuses=statuses, health=health, shadow=shadow
    )
    return gates.evaluate(
        t, model="barn", version=2, mode="install", statuses=statuses, health=health, shadow=shadow
    )


def test_malformed_health_and_shadow_never_reach_the_gates(db: Database) -> None:
    ingest = RolloutIngest(db, transfers=None)  # type: ignore[arg-type]
    ingest.on_health("gw-1", _dump(GOOD_HEALTH))
    ingest.on_shadow("gw-1", _dump(GOOD_SHADOW))
    for bad in BAD_HEALTH:
        ingest.on_health("gw-1", _dump(bad))
        _evaluate(db, "gw-1")  # what the scheduler does at every tick
    for bad_shadow in BAD_SHADOW:
        ingest.on_shadow("gw-1", _dump(bad_shadow))
        _evaluate(db, "gw-1")
    for raw in NOT_OBJECTS:
        ingest.on_health("gw-1", raw)
        ingest.on_shadow("gw-1", raw)
        ingest.on_install("gw-1", raw)
    res = _evaluate(db, "gw-1")  # raised TypeError/ValueError/AttributeError before
    checks = {c.name: c for c in res.checks}
    assert checks["error_rate"].value == pytest.approx(0.01)  # the last good report counts
    with db.session() as s:
        row = s.get(DeviceHealth, "gw-1")
        assert row is not None and row.shadow["barn"]["rows"] == 50


def test_malformed_state_keeps_the_last_good_one_and_targeting_works(db: Database) -> None:
    deployments = DeploymentService(db, bundles=None, bus=None)  # type: ignore[arg-type]
    deployments.on_state("gw-2", _dump(GOOD_STATE))
    for bad in BAD_STATE:
        deployments.on_state("gw-2", _dump(bad))
    for raw in NOT_OBJECTS:
        deployments.on_state("gw-2", raw)
        deployments.on_install_ack("gw-2", raw)
    deployments.on_status("gw-2", b"\xff" * 100)
    with db.session() as s:
        dev = s.get(Device, "gw-2")
        assert dev is not None
        assert dev.reported == GOOD_STATE and dev.farm_id == "farm-a"
        assert dev.status == "online"  # the garbage status did not replace it
        fleet = [(d.device_id, d.reported or {}, d.farm_id) for d in s.scalars(select(Device))]
    assert resolve(Targeting(tags=["north"], hardware=["pi5"]), "barn", fleet) == ["gw-2"]
