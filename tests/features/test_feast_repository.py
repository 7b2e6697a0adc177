"""The generated Feast repository as an operator meets it: the `feast` CLI runs on it and
agrees with the API, views registered through the API serve values, and the online
store works by URL on the machine's PostgreSQL and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from feature_streams import T0, make_readings

from control_plane.api.features import router
from control_plane.feature_store import FeastFeatureStore, online_store_config
from farmiq.features import VIEWS
from tests.support.postgres import temp_database

CLIMATE = next(v for v in VIEWS if v.name == "barn_climate_1h")
READINGS = make_readings(["b1", "b2"], hours=2, seed=3)
END = max(r[2] for r in READINGS)


def _client(store: FeastFeatureStore) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.state.feature_store = store
    return TestClient(app)


def _my_view(name: str = "my_climate", sensor: str | None = None) -> dict[str, Any]:
    d = CLIMATE.to_dict()
    d["name"] = name
    for f in d["features"]:
        f["name"] = "my_" + f["name"]
        if sensor:
            f["sensor"] = sensor
    return d


def _materialize(c: TestClient) -> None:
    body = {
        "start": datetime.fromtimestamp(T0 - 3600, UTC).isoformat(),
        "end": datetime.fromtimestamp(END, UTC).isoformat(),
    }
    r = c.post("/api/v1/features/materialize", json=body)
    assert r.status_code == 200, r.text


def test_a_view_registered_after_ingest_serves_what_the_builtin_view_serves(
    tmp_path: Path,
) -> None:
    c = _client(FeastFeatureStore(tmp_path / "repo"))
    assert c.post("/api/v1/features/readings", json={"readings": READINGS}).status_code == 200
    r = c.post("/api/v1/features/register", json={"views": [_my_view()]})
    assert r.status_code == 200, r.text
    _materialize(c)
    r = c.post(
        "/api/v1/features/serving",
        json={
            "entities": [{"barn_id": "b1"}, {"barn_id": "b2"}],
            "features": ["my_climate:my_co2_max_1h", "barn_climate_1h:co2_max_1h"],
        },
    )
    assert r.status_code == 200, r.text
    got = r.json()["features"]
    assert any(v is not None for v in got["co2_max_1h"]), got
    assert got["my_co2_max_1h"] == got["co2_max_1h"]


def test_a_view_on_an_unknown_sensor_is_refused_naming_it(tmp_path: Path) -> None:
    c = _client(FeastFeatureStore(tmp_path / "repo"))
    r = c.post("/api/v1/features/register", json={"views": [_my_view("odd", "methane_ppm")]})
    assert r.status_code == 422
    assert "methane_ppm" in r.json()["detail"]
    assert "odd" not in c.get("/api/v1/features/list").text


def test_the_feast_cli_agrees_with_the_api(tmp_path: Path) -> None:
    """`feast plan` on the generated repository, unmodified, deletes nothing the API applied
    (before: the repository held only feature_store.yaml, so every object was 'Deleted')."""
    store = FeastFeatureStore(tmp_path / "repo")
    c = _client(store)
    assert c.post("/api/v1/features/register", json={"views": [_my_view()]}).status_code == 200
    feast = Path(sys.executable).parent / "feast"
    out = subprocess.run(
        [str(feast), "plan"],
        cwd=store.repo_dir,
        env={**os.environ, "FEAST_USAGE": "False"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Deleted" not in text, text[-3000:]
    for name in ("barn_climate_1h", "my_climate", "flock_profile"):
        assert f"Created feature view {name}" not in text, text[-3000:]


def _serve_through(url: str, tmp_path: Path) -> list[Any]:
    store = FeastFeatureStore(
        tmp_path / "repo", online_store_url=url, project=f"farmiq_t{uuid.uuid4().hex[:8]}"
    )
    c = _client(store)
    assert c.post("/api/v1/features/readings", json={"readings": READINGS}).status_code == 200
    _materialize(c)
    r = c.post(
        "/api/v1/features/serving",
        json={
            "entities": [{"barn_id": "b1"}, {"barn_id": "b2"}],
            "features": ["barn_climate_1h:co2_max_1h"],
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["features"]["co2_max_1h"]  # type: ignore[no-any-return]


def test_postgresql_online_store_by_url_on_a_server_without_tls(tmp_path: Path) -> None:
    with temp_database("farmiq_feast") as sa_url:
        url = sa_url.replace("postgresql+psycopg2://", "postgresql://")
        assert online_store_config(url, tmp_path)["sslmode"] == "disable"  # loopback default
        values = _serve_through(url, tmp_path)
    assert any(v is not None and v > 0 for v in values), values


def test_redis_online_store_by_url(tmp_path: Path) -> None:
    values = _serve_through("redis://127.0.0.1:6379/0", tmp_path)
    assert any(v is not None and v > 0 for v in values), values


def test_sslmode_in_the_url_is_honoured(tmp_path: Path) -> None:
    cfg = online_store_config("postgresql://u@db.example.com/f?sslmode=verify-full", tmp_path)
    assert cfg["sslmode"] == "verify-full"
    assert online_store_config("postgresql://u@db.example.com/f", tmp_path)["sslmode"] == "require"
