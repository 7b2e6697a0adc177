"""Every line a control plane writes is JSON when JSON logs are on: a run on PostgreSQL
(Alembic migrations at start-up), model registration (MLflow), a bundle build, a 404,
a malformed request and a graceful stop, with nothing but JSON objects in its log."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.procs import ControlPlaneProc

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@pytest.fixture
def fresh_db() -> Any:
    name = f"farmiq_logs_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required: {exc}")
    yield f"{PG}/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def test_every_control_plane_log_line_is_json(
    tmp_path: Path, mqtt_port: int, fresh_db: str, barn_model: Any
) -> None:
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port, database_url=fresh_db)
    cp.start()
    try:
        with cp.client() as c:
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": "logs-barn", "meta": json.dumps({"task": "classification"})},
                headers={"X-Request-Id": "logs-req-1"},
            )
            assert r.status_code == 200, r.text
            v = r.json()["version"]
            assert c.put("/api/v1/models/logs-barn/promote", json={"version": v}).status_code == 200
            assert c.get("/api/v1/models/no-such-model").status_code == 404
            assert c.post("/api/v1/rollouts", content=b"{not json").status_code == 422
    finally:
        cp.stop(signal.SIGTERM)
    lines = [ln for ln in cp.log_text().splitlines() if ln.strip()]
    bad = []
    records = []
    for ln in lines:
        try:
            rec = json.loads(ln)
            assert isinstance(rec, dict)
            records.append(rec)
        except (ValueError, AssertionError):
            bad.append(ln)
    assert bad == [], f"{len(bad)} of {len(lines)} lines are not JSON: {bad[:5]}"
    assert len(records) >= 5
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    # The request's id is on the lines written while serving it, MLflow's included.
    served = [r for r in records if r.get("request_id") == "logs-req-1"]
    assert any(r["logger"] == "control_plane.access" for r in served)
    # MLflow's own output (its prints and its loggers) is among them, as JSON.
    assert any(r["logger"].startswith("mlflow") or r["logger"] == "stderr" for r in records)
    assert any("registered model" in r["msg"].lower() for r in served)
