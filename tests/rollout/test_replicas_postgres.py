"""Two control-plane replicas on one PostgreSQL and one broker: a rollout advances, and no
step is taken twice (each device is given the new desired state once, each wave starts
once), whichever replica takes it."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from tests.rollout.conftest import (
    MODEL,
    register_versions,
    start_cp,
    wait_devices_known,
    wait_rollout,
)

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_url():
    name = f"farmiq_rollout_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    yield f"{PG}/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_two_replicas_never_both_advance_the_same_rollout(
    tmp_path, mqtt_port, pg_url, fleet_factory
):
    shared = {"database_url": pg_url}
    a = start_cp(tmp_path / "a", mqtt_port, replica="replica-a", **shared)
    # replica b: same database, same MLflow store and signing key, same share group
    b = None
    try:
        mlflow = f"sqlite:///{(a.data_dir / 'mlflow.db').resolve()}"
        keys = [str(a.data_dir / "keys" / "bundle-signing.pem")]
        v1, v2 = register_versions(a, 2)
        b = start_cp(
            tmp_path / "b",
            mqtt_port,
            replica="replica-b",
            database_url=pg_url,
            mlflow_tracking_uri=mlflow,
            signing_keys=keys,
            mqtt={
                "port": mqtt_port,
                "client_id": f"cp-b-{uuid.uuid4().hex[:6]}",
                "share_group": f"farmiq-cp-test-{a.port}",
            },
        )
        tag = f"pg{uuid.uuid4().hex[:6]}"
        fleet = fleet_factory(a, gateways=24, prefix=tag, tags=[tag], initial_version=v1)
        wait_devices_known(a, tag, 24)
        with b.client() as c:  # created through replica b, advanced by whichever gets the lock
            r = c.post(
                "/api/v1/rollouts",
                json={
                    "model": MODEL,
                    "version": v2,
                    "targeting": {"tags": [tag]},
                    "waves": [{"percent": 25}, {"percent": 100}],
                    "soak_s": 0.5,
                    "rate_per_minute": 600,
                },
            )
            assert r.status_code == 200, r.text
            rid = r.json()["id"]
        done = wait_rollout(
            a, rid, lambda d: d["status"] in ("succeeded", "failed", "paused"), timeout=90
        )
        assert done["status"] == "succeeded", done
        assert fleet.versions() == {v2: 24}
        eng = sa.create_engine(pg_url)
        with eng.connect() as c:
            rows = c.execute(
                sa.text("select kind, replica, detail from rollout_events where rollout_id = :r"),
                {"r": rid},
            ).all()
        eng.dispose()
        sent = Counter(row.detail["device"] for row in rows if row.kind == "desired_sent")
        assert len(sent) == 24 and set(sent.values()) == {1}, sent
        started = Counter(row.detail["wave"] for row in rows if row.kind == "wave_started")
        assert started == {0: 1, 1: 1}
        assert {row.replica for row in rows} <= {"replica-a", "replica-b"}
    finally:
        if b is not None:
            b.stop()
        a.stop()
