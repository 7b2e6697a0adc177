"""OpenTelemetry traces of the control plane, configured by the standard ``OTEL_*`` variables.

On when ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and not
``OTEL_SDK_DISABLED=true``: spans go over OTLP/HTTP (protobuf) through a batch processor;
service name, resource attributes, sampler, headers and batching come from the SDK's own
variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...). Off, nothing is imported and the request
path pays one ``None`` check.

Spans: every API request (``<method> <route>``: FastAPI's own telemetry, on as soon as a
tracer provider is set here, continues the caller's W3C ``traceparent``), and, wrapped here
at start-up so the areas' code stays as it is, each rollout scheduler step (``rollout.step``), each bundle
build (``bundle.build``) and each drift ingest from MQTT (``drift.ingest``). Log lines
written inside a span carry its ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from farmiq import logging_setup, topics

log = logging.getLogger(__name__)

_tracer: Any = None
_configured = False


def enabled_by_env() -> bool:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "")
    if exporter == "none":
        return False
    return exporter == "otlp" or bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def tracer() -> Any:
    """The control plane's tracer, or None when tracing is off (configured on first call)."""
    global _tracer, _configured
    if _configured:
        return _tracer
    _configured = True
    if not enabled_by_env():
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    os.environ.setdefault("OTEL_SERVICE_NAME", "farmiq-control-plane")
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # flush what is still batched

    def ids() -> tuple[str, str] | None:
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")

    logging_setup.trace_ids = ids
    _tracer = trace.get_tracer("farmiq.control_plane")
    log.info("tracing on: OTLP/HTTP to %s", _endpoint())
    return _tracer


def _endpoint() -> str:
    env = os.environ
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/") + "/v1/traces"
    )


def traced(name: str, fn: Callable[..., Any], **attrs: Any) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        with _tracer.start_as_current_span(name, attributes=attrs):
            return fn(*args, **kw)

    return wrapper


def setup(ctx: Any) -> None:
    """Wrap the areas' long steps in spans (after their own setup)."""
    if tracer() is None:
        return
    ctx.bundles.build = traced("bundle.build", ctx.bundles.build)
    rollouts = ctx.services.get("rollouts")
    if rollouts is not None:
        rollouts.sch._step = traced("rollout.step", rollouts.sch._step)
    mqtt = ctx.mqtt
    if mqtt is not None:
        handlers = mqtt._handlers.get(topics.DRIFT, [])
        mqtt._handlers[topics.DRIFT] = [traced("drift.ingest", h) for h in handlers]
