"""OpenTelemetry traces of the control plane, configured by the standard ``OTEL_*`` variables.

On when ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and not
``OTEL_SDK_DISABLED=true``: spans go over OTLP/HTTP (protobuf) through a batch processor;
service name, resource attributes, sampler, headers and batching come from the SDK's own
variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...). Off, nothing is imported and the request
path pays one ``None`` check.

Spans: every API request (``<method> <route>``: FastAPI's own telemetry, on as soon as a
tracer provider is set here, continues the caller's W3C ``traceparent``); each rollout
scheduler step (``rollout.step``, continuing the trace of the request that created the
rollout); each gateway message handled (``mqtt.receive <leaf>``, continuing the
gateway's trace when its MQTT 5 user properties carry one); and, wrapped here at start-up
so the areas' code stays as it is, each bundle build (``bundle.build``) and each drift
ingest (``drift.ingest``). What is published to gateways inside a span carries its
``traceparent`` (control_plane/mqtt_bus.py). Log lines written inside a span carry its
``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from farmiq import topics
from farmiq import tracing as farmiq_tracing

log = logging.getLogger(__name__)

_tracer: Any = None
_configured = False


def tracer() -> Any:
    """The control plane's tracer, or None when tracing is off (configured on first call)."""
    global _tracer, _configured
    if _configured:
        return _tracer
    _configured = True
    _tracer = farmiq_tracing.configure("farmiq-control-plane", "farmiq.control_plane")
    return _tracer


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
        rollouts.sch.tracer = _tracer  # rollout.step spans, continuing the creator's trace
    mqtt = ctx.mqtt
    if mqtt is not None:
        mqtt.tracer = _tracer  # MQTT 5: traceparent out in user properties, and back in
        handlers = mqtt._handlers.get(topics.DRIFT, [])
        mqtt._handlers[topics.DRIFT] = [traced("drift.ingest", h) for h in handlers]
