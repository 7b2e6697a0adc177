"""Prometheus ``/metrics`` of the control plane.

HTTP latency is observed by the request middleware (control_plane/observability.py).
Fleet state is read from the database when Prometheus scrapes, by a custom collector, so
no write path is touched: devices online, versions running, rollouts and their progress
by wave, drift status per model (the drift analysis is cached for ``DRIFT_TTL_S`` since it
sums every recent window).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text

from control_plane import ops_queries
from control_plane.context import ControlPlaneContext

log = logging.getLogger(__name__)

router = APIRouter(tags=["system"])

DRIFT_TTL_S = 30.0
ROLLOUT_STATES = (
    "pending",
    "running",
    "soaking",
    "paused",
    "succeeded",
    "failed",
    "aborted",
    "rolled_back",
)


class FleetCollector(Collector):
    def __init__(self, ctx: ControlPlaneContext) -> None:
        self.ctx = ctx
        self._drift: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []

    def _drift_cached(self) -> list[dict[str, Any]]:
        with self._lock:
            at, data = self._drift
            if time.time() - at > DRIFT_TTL_S:
                data = ops_queries.drift(self.ctx)
                self._drift = (time.time(), data)
            return data

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        up = 1
        try:
            with ctx.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            up = 0
        yield GaugeMetricFamily("farmiq_cp_database_up", "1 when the database answers", value=up)
        if ctx.mqtt is not None:
            yield GaugeMetricFamily(
                "farmiq_cp_broker_connected", "1 while the MQTT bus is connected",
                value=1 if ctx.mqtt.connected.is_set() else 0,
            )  # fmt: skip
        if not up:
            return
        devices = ops_queries.fleet(ctx)
        by_status = Counter(d["status"] for d in devices)
        g = GaugeMetricFamily(
            "farmiq_cp_devices", "Known gateways by connection state", labels=["status"]
        )
        for status in ("online", "offline", "unknown"):
            g.add_metric([status], by_status.get(status, 0))
        yield g
        yield GaugeMetricFamily(
            "farmiq_cp_devices_online", "Gateways online now", value=by_status.get("online", 0)
        )
        versions: Counter[tuple[str, str]] = Counter()
        health: Counter[str] = Counter()
        for d in devices:
            health[d["health"]["state"]] += 1
            for model, version in d["models"].items():
                versions[(model, str(version))] += 1
        g = GaugeMetricFamily(
            "farmiq_cp_devices_health", "Gateways by health state", labels=["state"]
        )
        for state, n in sorted(health.items()):
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily(
            "farmiq_cp_model_version_devices",
            "Gateways running each model version",
            labels=["model", "version"],
        )
        for (model, version), n in sorted(versions.items()):
            g.add_metric([model, version], n)
        yield g
        yield from _rollouts(ops_queries.rollouts(ctx, limit=100))
        yield from _drift(self._drift_cached())


def _rollouts(rollouts: list[dict[str, Any]]) -> Iterator[Metric]:
    counts = Counter(r["status"] for r in rollouts)
    g = GaugeMetricFamily(
        "farmiq_cp_rollouts", "Rollouts (the latest 100) by state", labels=["status"]
    )
    for status in sorted(set(ROLLOUT_STATES) | set(counts)):
        g.add_metric([status], counts.get(status, 0))
    yield g
    progress = GaugeMetricFamily(
        "farmiq_cp_rollout_progress_ratio", "Share of a rollout's targeted devices installed",
        labels=["rollout", "model", "version", "status"],
    )  # fmt: skip
    wave = GaugeMetricFamily(
        "farmiq_cp_rollout_current_wave", "Index of the wave in progress", labels=["rollout"]
    )
    waves = GaugeMetricFamily(
        "farmiq_cp_rollout_wave_progress_ratio", "Share of a wave's devices installed",
        labels=["rollout", "wave", "percent", "status"],
    )  # fmt: skip
    devices = GaugeMetricFamily(
        "farmiq_cp_rollout_devices",
        "Devices of a rollout by install status",
        labels=["rollout", "status"],
    )
    for r in rollouts:
        if r["status"] not in ("pending", "running", "soaking", "paused"):
            continue  # finished rollouts stay in farmiq_cp_rollouts only: bounded series
        progress.add_metric([r["id"], r["model"], str(r["version"]), r["status"]], r["progress"])
        wave.add_metric([r["id"]], r["current_wave"])
        total: Counter[str] = Counter()
        for w in r["waves"]:
            waves.add_metric(
                [r["id"], str(w["index"]), str(w["percent"]), w["status"]], w["progress"]
            )
            total.update(w["by_status"])
        for status, n in sorted(total.items()):
            devices.add_metric([r["id"], status], n)
    yield progress
    yield wave
    yield waves
    yield devices


def _drift(models: list[dict[str, Any]]) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "farmiq_cp_drift_detected",
        "1 when any device shows drift on a model's features",
        labels=["model"],
    )
    devices = GaugeMetricFamily(
        "farmiq_cp_drift_devices", "Devices with drift per model", labels=["model"]
    )
    psi = GaugeMetricFamily(
        "farmiq_cp_drift_max_psi",
        "Largest PSI over the fleet per model and feature",
        labels=["model", "feature"],
    )
    for m in models:
        status.add_metric([m["model"]], 1 if m["status"] == "drift" else 0)
        devices.add_metric([m["model"]], m.get("drifted_devices", 0))
        for f in m.get("features", []):
            values = [c[f]["psi"] for c in m.get("cells", {}).values() if c[f]["psi"] is not None]
            if values:
                psi.add_metric([m["model"], f], max(values))
    yield status
    yield devices
    yield psi


def _registry(request: Request) -> CollectorRegistry:
    state = request.app.state
    registry: CollectorRegistry | None = getattr(state, "metrics_registry", None)
    if registry is None:  # observability middleware not installed: fleet metrics only
        registry = state.metrics_registry = CollectorRegistry(auto_describe=False)
    if not getattr(state, "fleet_collector", None):
        state.fleet_collector = FleetCollector(state.ctx)
        registry.register(state.fleet_collector)
    return registry


@router.get(
    "/metrics", summary="Prometheus metrics (text exposition format)", include_in_schema=True
)
async def metrics(request: Request) -> Response:
    registry = _registry(request)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
