"""Operator API security: roles on every endpoint, hashed keys, throttling, webhooks, audit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from control_plane.api import audit as audit_api
from control_plane.security import (
    FailedAuthThrottle,
    Principal,
    Role,
    WebhookSignatureError,
    audit,
    audit_request,
    install_security,
    sign_webhook,
    verify_webhook,
)
from control_plane.security.api_keys import api_keys_table

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
PG_DB = "farmiq_security_test"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def app_and_keys(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Clock, sa.Engine]]:
    app = FastAPI()
    clock = Clock()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/cp.sqlite")
    sec = install_security(
        app,
        engine,
        throttle=FailedAuthThrottle(max_failures=3, window_s=60, lockout_s=30, clock=clock),
    )

    @app.get("/api/v1/things")
    def read(_: Principal = Depends(sec_dep(Role.VIEWER))) -> dict[str, bool]:
        return {"ok": True}

    @app.post("/api/v1/rollouts")
    def rollout(
        request: Request, p: Principal = Depends(sec_dep(Role.OPERATOR))
    ) -> dict[str, bool]:
        audit_request(request, p, "rollout.create", "barn@3", {"devices": ["gw-1"]})
        return {"ok": True}

    app.include_router(audit_api.router)
    keys = {r: sec.keys.create(f"{r}-key", r) for r in ("viewer", "operator", "admin")}
    with TestClient(app) as client:
        yield client, keys, clock, engine


def sec_dep(role: Role):  # type: ignore[no-untyped-def]
    from control_plane.security import require_role

    return require_role(role)


def h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_roles_are_checked_on_every_endpoint(
    app_and_keys: tuple[TestClient, dict[str, str], Clock, sa.Engine],
) -> None:
    client, keys, _, _ = app_and_keys
    expect = {
        ("get", "/api/v1/things"): {"viewer": 200, "operator": 200, "admin": 200},
        ("post", "/api/v1/rollouts"): {"viewer": 403, "operator": 200, "admin": 200},
        ("get", "/api/v1/audit"): {"viewer": 403, "operator": 403, "admin": 200},
    }
    for (method, path), by_role in expect.items():
        assert getattr(client, method)(path).status_code == 401
        for role, code in by_role.items():
            assert getattr(client, method)(path, headers=h(keys[role])).status_code == code, (
                path,
                role,
            )
        assert (
            getattr(client, method)(path, headers={"X-API-Key": keys["admin"]}).status_code == 200
        )


def test_keys_are_stored_hashed_and_revocable(
    app_and_keys: tuple[TestClient, dict[str, str], Clock, sa.Engine],
) -> None:
    client, keys, _, engine = app_and_keys
    with engine.connect() as conn:
        dump = repr(conn.execute(sa.select(api_keys_table)).all())
    for key in keys.values():
        assert key not in dump and key.split("_", 2)[2] not in dump
    store = client.app.state.security.keys  # type: ignore[attr-defined]
    assert store.revoke("operator-key")
    assert client.post("/api/v1/rollouts", headers=h(keys["operator"])).status_code == 401


def test_failed_auth_is_throttled_per_address(
    app_and_keys: tuple[TestClient, dict[str, str], Clock, sa.Engine],
) -> None:
    client, keys, clock, _ = app_and_keys
    for _ in range(3):
        assert client.get("/api/v1/things", headers=h("fiq_guess_x")).status_code == 401
    locked = client.get("/api/v1/things", headers=h(keys["viewer"]))
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) == 30
    clock.t += 31
    assert client.get("/api/v1/things", headers=h(keys["viewer"])).status_code == 200


def test_audit_log_records_who_what_where_and_is_append_only(
    app_and_keys: tuple[TestClient, dict[str, str], Clock, sa.Engine],
) -> None:
    client, keys, _, engine = app_and_keys
    assert client.post("/api/v1/rollouts", headers=h(keys["operator"])).status_code == 200
    rows = client.get(
        "/api/v1/audit", params={"action": "rollout.create"}, headers=h(keys["admin"])
    ).json()
    assert len(rows) == 1
    e = rows[0]
    assert (e["actor"], e["target"], e["source_ip"], e["detail"]) == (
        "apikey:operator-key",
        "barn@3",
        "testclient",
        {"devices": ["gw-1"]},
    )
    assert (
        client.get("/api/v1/audit", params={"actor": "nobody"}, headers=h(keys["admin"])).json()
        == []
    )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'someone-else'"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log"))


def test_audit_log_is_append_only_on_postgresql() -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": PG_DB}
            ).first():
                conn.execute(sa.text(f"CREATE DATABASE {PG_DB}"))
    except Exception as exc:  # pragma: no cover - environment without PostgreSQL
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    finally:
        admin.dispose()
    engine = sa.create_engine(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB)
    from control_plane.security import create_audit_table

    create_audit_table(engine)
    entry = audit(engine, "apikey:t", "test.pg", "x", "10.0.0.1", {"n": 1})
    for stmt in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(stmt))
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT actor FROM audit_log WHERE id = :i"), {"i": entry}
            ).scalar()
            == "apikey:t"
        )


def test_webhook_signature_detects_tampering_and_replay() -> None:
    body = b'{"event":"drift","device":"gw-1"}'
    headers = sign_webhook("s3cret", body)
    verify_webhook("s3cret", body, headers)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_webhook("s3cret", body.replace(b"gw-1", b"gw-2"), headers)
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_webhook("other", body, headers)
    old = sign_webhook("s3cret", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookSignatureError, match="replay"):
        verify_webhook("s3cret", body, old)
    with pytest.raises(WebhookSignatureError, match="missing"):
        verify_webhook("s3cret", body, {})
