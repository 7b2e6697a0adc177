"""Request ids, access logs and HTTP latency for the control plane.

A pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streaming answers and cost
an extra task per request). For every HTTP request it takes the caller's
``X-Request-Id`` (or makes one), puts it in ``farmiq.logging_setup.request_id`` so every
log line of that request carries it, echoes it in the response, logs one JSON access line,
and observes the latency in a histogram labelled by route template (``/api/v1/rollouts/{id}``,
not the raw path, so label values stay bounded).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

from farmiq.logging_setup import adopt_library_loggers, request_id

log = logging.getLogger("control_plane.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

# Probes and scrapes are frequent and dull: counted, but logged at DEBUG only.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram(
            "farmiq_cp_http_request_duration_seconds",
            "Control-plane HTTP request latency by method, route template and status class",
            ["method", "route", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.in_flight = Counter(
            "farmiq_cp_http_requests_started",
            "HTTP requests received",
            ["method"],
            registry=registry,
        )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        from control_plane.tracing import tracer

        self.app = app
        self.metrics = metrics
        # OTEL_* may turn tracing on: then FastAPI's own telemetry makes the server span of
        # each request (continuing the caller's traceparent) and log lines carry its ids.
        tracer()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                rid = v.decode("latin-1")[:64]
                break
        rid = rid or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        status = 500
        t0 = time.perf_counter()
        method = scope["method"]
        self.metrics.in_flight.labels(method).inc()

        observed: list[float] = []

        def observe() -> None:
            # Before the last body byte goes out: a client that reads the answer and then
            # scrapes /metrics must find its own request counted.
            elapsed = time.perf_counter() - t0
            observed.append(elapsed)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(method, route, f"{status // 100}xx").observe(elapsed)

        async def send_with_id(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
                msg.setdefault("headers", [])
                msg["headers"] = [*msg["headers"], (b"x-request-id", rid.encode("latin-1"))]
            elif msg["type"] == "http.response.body" and not msg.get("more_body") and not observed:
                observe()
            await send(msg)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not observed:  # no response sent (the app failed before answering)
                observe()
            elapsed = observed[0]
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            path = scope.get("path", "")
            log.log(
                logging.DEBUG if path in QUIET_PATHS else logging.INFO,
                "%s %s %s",
                method,
                path,
                status,
                extra={"method": method, "path": path, "route": route, "status": status,
                       "duration_ms": round(elapsed * 1000, 2)},
            )  # fmt: skip
            request_id.reset(token)


def install(app: FastAPI) -> CollectorRegistry:
    """Add the middleware; the metrics registry goes to ``app.state.metrics_registry``."""
    registry = CollectorRegistry(auto_describe=False)
    adopt_library_loggers()  # MLflow and others are imported by now: their records to JSON
    app.state.metrics_registry = registry
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, _cpu_seconds, _open_fds
    app.state.http_metrics = HttpMetrics(registry)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.http_metrics)
    return registry
