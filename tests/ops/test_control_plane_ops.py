"""The control plane for operators: request ids and JSON logs, Prometheus /metrics, the
dashboard in a real headless Chromium, and PostgreSQL with Alembic migrations."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from farmiq import topics
from tests.ops.conftest import MODEL, publish
from tests.ops.test_agent_service import _metric
from tests.support.procs import ENV, ControlPlaneProc

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
OPS_DB = "farmiq_ops_test"


def _gateway_reports(
    mqtt_port: int, device_id: str, farm: str, version: int | None, tags: list[str]
) -> None:
    """What a gateway says on connect: online, then its reported state (the real topics)."""
    state: dict[str, Any] = {
        "device_id": device_id,
        "farm_id": farm,
        "hardware_class": "rpi4",
        "tags": tags,
        "agent_version": "0.1.0",
        "models": {MODEL: {"version": version, "runtime": "onnxruntime"}} if version else {},
        "ts": time.time(),
    }
    publish(mqtt_port, topics.up(device_id, topics.STATUS), b"online")
    publish(mqtt_port, topics.up(device_id, topics.STATE), orjson.dumps(state))


def _wait(pred: Any, timeout: float = 20, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


@pytest.fixture(scope="module")
def registered(control_plane: ControlPlaneProc, barn_model: Any) -> int:
    meta = {
        "task": "classification",
        "labels": ["off", "low", "high"],
        "feature_names": ["temperature_c", "humidity_pct", "ammonia_ppm", "co2_ppm"],
    }
    with control_plane.client() as c:
        r = c.get(f"/api/v1/models/{MODEL}")
        if r.status_code == 200 and r.json().get("aliases", {}).get("production"):
            return int(r.json()["aliases"]["production"])
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", barn_model.onnx_bytes)},
            data={"name": MODEL, "meta": json.dumps(meta)},
        )
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        assert (
            c.put(f"/api/v1/models/{MODEL}/promote", json={"version": version}).status_code == 200
        )
    return int(version)


@pytest.fixture(scope="module")
def fleet(control_plane: ControlPlaneProc, mqtt_port: int) -> list[str]:
    tag = f"ops-{uuid.uuid4().hex[:6]}"
    ids = [f"gw-ops-{tag[-6:]}-{i:02d}" for i in range(6)]
    for i, dev in enumerate(ids):
        _gateway_reports(mqtt_port, dev, f"farm-{i % 2 + 1}", None, [tag, "dairy"])
    with control_plane.client() as c:
        _wait(
            lambda: (
                {d["device_id"] for d in c.get("/dashboard/data").json()["devices"]} >= set(ids)
            ),
            what="the simulated gateways in the registry",
        )
    return ids


def _json_lines(text: str) -> list[dict[str, Any]]:
    """JSON log records; skips the line still being written and other processes' output."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def test_request_id_is_echoed_and_logged_as_json(control_plane: ControlPlaneProc) -> None:
    r = httpx.get(control_plane.url + "/api/v1/trust-root", headers={"X-Request-Id": "ops-trace-7"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "ops-trace-7"
    generated = httpx.get(control_plane.url + "/api/v1/trust-root").headers["x-request-id"]
    assert len(generated) == 16 and generated != "ops-trace-7"

    def logged() -> list[dict[str, Any]]:
        return [
            x for x in _json_lines(control_plane.log_text()) if x.get("request_id") == "ops-trace-7"
        ]

    (rec,) = _wait(logged, what="the access log line")
    assert rec["logger"] == "control_plane.access" and rec["status"] == 200
    assert rec["route"] == "/api/v1/trust-root" and rec["duration_ms"] >= 0


def test_control_plane_metrics_show_fleet_rollout_and_http_latency(
    control_plane: ControlPlaneProc, fleet: list[str], registered: int
) -> None:
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/rollouts",
            json={
                "model": MODEL,
                "version": registered,
                "targeting": {"devices": fleet[:4]},
                "waves": [{"percent": 50}, {"percent": 100}],
                "soak_s": 3600,
                "rate_per_minute": 600,
            },
        )
        assert r.status_code == 200, r.text
        rid = r.json()["id"]

        def scraped() -> str | None:
            t = c.get("/metrics").text
            return t if _metric(t, "farmiq_cp_rollout_devices", rollout=rid) is not None else None

        text = _wait(scraped, what="rollout metrics")
    assert r.status_code == 200
    assert (_metric(text, "farmiq_cp_devices_online") or 0) >= len(fleet)
    assert _metric(text, "farmiq_cp_database_up") == 1
    assert _metric(text, "farmiq_cp_rollout_progress_ratio", rollout=rid) == 0.0  # nobody installed
    assert _metric(text, "farmiq_cp_rollout_current_wave", rollout=rid) == 0
    assert (_metric(text, "farmiq_cp_rollouts", status="running") or 0) >= 1
    n = _metric(
        text,
        "farmiq_cp_http_request_duration_seconds_count",
        method="POST",
        route="/api/v1/rollouts",
        status="2xx",
    )
    assert n is not None and n >= 1
    with control_plane.client() as c:
        c.post(f"/api/v1/rollouts/{rid}/abort")


DRIFT_MODEL = "ops-barn-climate"
DRIFT_FEATURES = ["temp_c", "humidity", "co2_ppm", "ammonia_ppm"]


def _drift_windows(cp: ControlPlaneProc, mqtt_port: int, devices: list[str]) -> None:
    """A reference, then one window per gateway over MQTT; the first two gateways drift."""
    import numpy as np

    from edge_agent.telemetry.drift_stats import DriftStats, encode_window
    from farmiq.drift_reference import build_reference

    means, scales = np.array([24.0, 65.0, 1500.0, 8.0]), np.array([2.0, 8.0, 300.0, 2.0])
    rng = np.random.default_rng(7)
    ref_x = means + rng.normal(size=(4000, 4)) * scales
    ref = build_reference(
        {f: ref_x[:, i] for i, f in enumerate(DRIFT_FEATURES)}, prediction=ref_x[:, 0]
    )
    with cp.client() as c:
        r = c.post("/api/v1/drift/reference", json={"model": DRIFT_MODEL, "reference": ref})
        assert r.status_code == 200, r.text
    for i, dev in enumerate(devices):
        z = rng.normal(size=(1500, 4))
        if i == 0:
            z[:, 0] += 1.5  # a hot barn
        if i == 1:
            z[:, 2] *= 2.5  # CO2 sensor gone noisy
        x = means + z * scales
        start = time.time() - 120  # a window that closed a minute ago
        stats = DriftStats(dev, farm_id="farm-1", clock=lambda s=start: s)  # type: ignore[misc]
        stats.register(DRIFT_MODEL, "1", ref)
        stats.observe(DRIFT_MODEL, "1", x, x[:, 0])
        (w,) = stats.close_window(now=start + 60)
        publish(mqtt_port, topics.up(dev, topics.DRIFT), encode_window(w))


def test_dashboard_in_headless_chromium(
    control_plane: ControlPlaneProc, fleet: list[str], registered: int, artifacts_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    with control_plane.client() as c:
        r = c.post(
            "/api/v1/rollouts",
            json={
                "model": MODEL,
                "version": registered,
                "targeting": {"devices": fleet},
                "waves": [{"percent": 34}, {"percent": 67}, {"percent": 100}],
                "soak_s": 3600,
                "rate_per_minute": 600,
            },
        )
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        _wait(
            lambda: c.get(f"/api/v1/rollouts/{rid}").json()["status"] == "running",
            what="a running rollout",
        )
    # Some gateways report the new version so the bars and version chips have something to show.
    port = control_plane_mqtt_port(control_plane)
    for dev in fleet[:2]:
        _gateway_reports(port, dev, "farm-1", registered, ["dairy"])
    _drift_windows(control_plane, port, fleet[:5])
    with control_plane.client() as c:
        drift = _wait(
            lambda: [
                m
                for m in c.get("/dashboard/data").json()["drift"]
                if m["model"] == DRIFT_MODEL and len(m["devices"]) == 5
            ],
            what="drift windows analysed",
        )[0]
    assert drift["status"] == "drift" and drift["features"] == DRIFT_FEATURES
    assert drift["cells"][fleet[0]]["temp_c"]["verdict"] == "drift"
    assert drift["cells"][fleet[2]]["temp_c"]["verdict"] != "drift"

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            resp = page.goto(control_plane.url + "/dashboard", wait_until="load")
            assert resp is not None and resp.status == 200
            assert page.title() == "FarmIQ Edge · Operations"
            for dev in fleet:
                row = page.locator(f'tr[data-device="{dev}"]')
                assert row.count() == 1, dev
                assert row.locator(".dot.online").count() == 1
            card = page.locator(f'.rollout[data-rollout="{rid}"]')
            assert card.get_attribute("data-status") == "running"
            assert f"{MODEL} v{registered}" in card.inner_text()
            assert card.locator(".wave").count() == 3
            assert "running" in card.locator('.wave[data-wave="0"]').inner_text()
            chip = page.locator(
                f'tr[data-device="{fleet[0]}"] .chip', has_text=f"{MODEL} v{registered}"
            )
            assert chip.count() == 1
            heat = page.locator(f'#drift [data-model="{DRIFT_MODEL}"] table.heat')
            assert heat.locator("tbody tr").count() == 5
            hot = heat.locator('td.cell[data-verdict="drift"]')
            assert hot.count() >= 2
            assert (
                hot.first.evaluate("e => getComputedStyle(e).backgroundColor")
                == "rgb(240, 166, 158)"
            )
            # The JavaScript ran: relative times are filled in.
            assert "ago" in page.locator(f'tr[data-device="{fleet[0]}"] td.ago').inner_text()
            page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (artifacts_dir / "dashboard.png").stat().st_size > 10_000
    with control_plane.client() as c:
        c.post(f"/api/v1/rollouts/{rid}/abort")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _health(port: int, dev: str, version: int, requests: int, errors: int, p99: float) -> None:
    doc = {"models": {MODEL: {"version": version, "requests": requests, "errors": errors,
                              "error_rate": errors / max(requests, 1), "p99_ms": p99}}}  # fmt: skip
    publish(port, topics.up(dev, topics.HEALTH), orjson.dumps(doc))


def test_dashboard_is_live_with_alerts_plots_and_the_devices_gate_reasons(
    control_plane: ControlPlaneProc, fleet: list[str], registered: int, artifacts_dir: Path
) -> None:
    """The page updates itself (no reload) as gateways report: a failed install pauses
    the rollout and the wave shows the device's code and reason, alerts appear in their
    panel, the serving plots and the PSI-over-time plot (with its threshold) draw, PSI
    cells are coloured by their verdict, and a finished rollout's wave count is right."""
    from playwright.sync_api import sync_playwright

    port = control_plane_mqtt_port(control_plane)
    targets = fleet[4:6]
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/rollouts",
            json={"model": MODEL, "version": registered, "targeting": {"devices": targets},
                  "waves": [{"percent": 50}, {"percent": 100}], "soak_s": 3600,
                  "rate_per_minute": 600},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        rows = _wait(
            lambda: c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"],
            what="rollout devices",
        )
    first = next(d["device_id"] for d in rows if d["wave"] == 0)
    _drift_windows(control_plane, port, fleet[:5])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            assert page.goto(control_plane.url + "/dashboard").status == 200  # type: ignore[union-attr]
            page.evaluate("window.__sameDocument = 'yes'")
            # Gateways report while the page is open.
            ack = {"ok": False, "rollout": rid, "code": "bad-signature", "name": MODEL,
                   "reason": "bundle signed by an unknown key", "version": registered}  # fmt: skip
            publish(port, topics.up(first, topics.INSTALL_ACK), orjson.dumps(ack))
            for i in range(3):
                _health(port, fleet[0], registered, 100 * (i + 1), i, 4.0 + i)
                time.sleep(0.6)
            publish(port, topics.up(fleet[5], topics.STATUS), b"offline")
            publish(port, topics.up(fleet[5], topics.STATUS), b"online")

            card = f'.rollout[data-rollout="{rid}"]'
            page.wait_for_selector(f'{card}[data-status="paused"]', timeout=30_000)
            failure = page.locator(f'{card} .wave[data-wave="0"] .failure[data-device="{first}"]')
            failure.wait_for(timeout=15_000)
            assert "bad-signature" in failure.inner_text()
            assert "unknown key" in failure.inner_text()
            wave0 = page.locator(f'{card} .wave[data-wave="0"]').inner_text()
            assert wave0.startswith("Wave 0") and "gate failed" in wave0
            reason = page.locator(f"{card} .reason").inner_text()
            assert "wave 0" in reason  # the reason and the wave label use the same numbers
            assert "on wave 0 (waves 0-1)" in page.locator(f"{card} .where").inner_text()
            page.wait_for_selector('#alerts tr.alert[data-kind="gateway_offline"]', timeout=15_000)
            page.wait_for_selector('#alerts tr.alert[data-kind="rollout_paused"]', timeout=15_000)
            # Attached, not "visible": a steady rate is a flat line, whose box has no height.
            for plot in ("#plot-rate", "#plot-p99"):
                line = page.locator(f"{plot} svg.plot polyline").first
                line.wait_for(state="attached", timeout=15_000)
                assert len((line.get_attribute("points") or "").split()) >= 2, plot
            heat = page.locator(f'#drift [data-model="{DRIFT_MODEL}"]').first
            heat.locator("line.plot-threshold[data-threshold='0.2']").wait_for(state="attached")
            assert heat.locator(".psi-plot polyline").count() == len(DRIFT_FEATURES)
            # Cells take the verdict's colour, whatever their PSI.
            for verdict, rgb in (("drift", "rgb(240, 166, 158)"), ("ok", "rgb(205, 235, 213)")):
                cell = heat.locator(f'td.cell[data-verdict="{verdict}"]').first
                assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == rgb
            assert page.evaluate("window.__sameDocument") == "yes"  # never reloaded
            assert int(page.evaluate("document.body.dataset.refreshes || 0")) >= 1
            # A finished rollout: "2 of 2 waves passed", never "wave 3/2".
            page.evaluate(
                """() => { const d = JSON.parse(JSON.stringify(window.__d || {}));
                fetch('/dashboard/data').then(r => r.json()).then(d => {
                  const r = d.rollouts[0];
                  Object.assign(r, {status: 'succeeded', current_wave: r.waves.length,
                    wave_now: null, waves_done: r.waves.length});
                  r.waves.forEach(w => w.status = 'succeeded');
                  window.farmiqDashboard.render(d); window.__rendered = 1; }); }"""
            )
            page.wait_for_function("window.__rendered === 1")
            done = page.locator(".rollout").first.locator(".where").inner_text()
            assert "2 of 2 waves passed" in done and "wave 3" not in done
            page.screenshot(path=str(artifacts_dir / "dashboard-live.png"), full_page=True)
            page.evaluate("window.farmiqDashboard.refresh()")
            page.wait_for_selector(f'{card}[data-status="paused"]')
            # docs/dashboard*.png are copies of these (the test does not write into docs/).
            page.screenshot(path=str(artifacts_dir / "dashboard-operations.png"))
            page.locator("#drift").screenshot(path=str(artifacts_dir / "dashboard-drift.png"))
        finally:
            browser.close()
    assert 20_000 < (artifacts_dir / "dashboard-operations.png").stat().st_size < 600_000
    with control_plane.client() as c:
        c.post(f"/api/v1/rollouts/{rid}/abort")


def control_plane_mqtt_port(cp: ControlPlaneProc) -> int:
    import tomllib

    return int(tomllib.loads((cp.workdir / "cp.toml").read_text())["mqtt"]["port"])


# -- PostgreSQL and Alembic -----------------------------------------------------------------
@pytest.fixture(scope="module")
def ops_db() -> str:
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {OPS_DB} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {OPS_DB}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required: {exc}")
    finally:
        admin.dispose()
    return f"{PG}/{OPS_DB}"


def test_alembic_upgrade_head_builds_every_table_on_postgresql(ops_db: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [str(Path(sys.executable).parent / "alembic"), "upgrade", "head"],
        cwd=repo,
        env={**ENV, "FARMIQ_CP__DATABASE_URL": ops_db},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from control_plane.schema import all_metadata, head_revision

    engine = sa.create_engine(ops_db)
    try:
        with engine.connect() as conn:
            mc = MigrationContext.configure(conn)
            assert mc.get_current_revision() == head_revision()
            diffs = compare_metadata(mc, all_metadata())  # type: ignore[arg-type]
        # Every table the code declares exists with its columns and indexes: a new table
        # without a migration shows up here.
        assert diffs == [], diffs
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (at, actor, action, target, source_ip, detail) "
                    "VALUES (now(), 'ops', 'test', '', '', '{}')"
                )
            )
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM audit_log"))
    finally:
        engine.dispose()


def test_control_plane_serves_from_postgresql(ops_db: str, tmp_path: Path, mqtt_port: int) -> None:
    # `farmiq control-plane migrate` is idempotent on a migrated database.
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "control-plane", "migrate", "--database-url", ops_db],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    from control_plane.schema import head_revision

    assert f"database at revision {head_revision()}" in out.stdout
    cp = ControlPlaneProc(tmp_path / "cp-pg", mqtt_port, database_url=ops_db)
    cp.start()
    try:
        dev = f"gw-pg-{uuid.uuid4().hex[:6]}"
        _gateway_reports(mqtt_port, dev, "farm-pg", None, ["pg"])
        with cp.client() as c:
            assert c.get("/ready").status_code == 200
            # up/status and up/state are handled in turn: wait for the state's farm too
            devices = _wait(
                lambda: [
                    d
                    for d in c.get("/dashboard/data").json()["devices"]
                    if d["device_id"] == dev and d["farm_id"] == "farm-pg"
                ],
                what="the device stored in PostgreSQL with its reported farm",
            )
            assert devices[0]["farm_id"] == "farm-pg" and devices[0]["status"] == "online"
            assert c.get("/dashboard").status_code == 200
    finally:
        cp.stop()
    engine = sa.create_engine(ops_db)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(
                    sa.text("SELECT farm_id FROM devices WHERE device_id = :d"), {"d": dev}
                ).scalar()
                == "farm-pg"
            )
    finally:
        engine.dispose()
