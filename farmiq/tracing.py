"""OpenTelemetry for both daemons, configured by the standard ``OTEL_*`` variables only.

On when ``OTEL_TRACES_EXPORTER=otlp`` or an OTLP endpoint is set
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and not
``OTEL_SDK_DISABLED=true``: spans go over OTLP/HTTP (protobuf) through a batch processor;
service name, resource attributes, sampler, headers and batching come from the SDK's own
variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``...). Off, the SDK is never imported and a
caller pays one ``None`` check.

The gateway installs the SDK with the ``edge-trace`` extra; without it, tracing asked for
by the environment is one warning and stays off.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from farmiq import logging_setup

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"


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


def endpoint() -> str:
    env = os.environ
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/") + "/v1/traces"
    )


def configure(service_name: str, scope: str) -> Any:
    """Set the process's tracer provider and return a tracer named ``scope``, or None when
    the environment does not ask for traces (or the SDK is not installed)."""
    if not enabled_by_env():
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_* ask for traces but the OpenTelemetry SDK is not installed "
            "(pip install 'farmiq-edge[edge-trace]'); tracing stays off"
        )
        return None

    os.environ.setdefault("OTEL_SERVICE_NAME", service_name)
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
    log.info("tracing on: OTLP/HTTP to %s", endpoint())
    return trace.get_tracer(scope)


def extract(carrier: Mapping[str, str]) -> Any:
    """The remote parent context a W3C ``traceparent`` in ``carrier`` names (or none)."""
    from opentelemetry.propagate import extract as _extract

    return _extract(dict(carrier))


def consumer_kind() -> Any:
    """SpanKind.CONSUMER: a span that handles a message someone else sent."""
    from opentelemetry.trace import SpanKind

    return SpanKind.CONSUMER


def inject() -> dict[str, str]:
    """The current span as W3C trace-context headers (``traceparent``, ``tracestate``)."""
    from opentelemetry.propagate import inject as _inject

    carrier: dict[str, str] = {}
    _inject(carrier)
    return carrier


def current_traceparent() -> str | None:
    """The current span's ``traceparent``, to keep with work that continues later (a
    rollout's steps); None when tracing is off, without importing anything."""
    if "opentelemetry.propagate" not in sys.modules and "opentelemetry.trace" not in sys.modules:
        return None
    return inject().get(TRACEPARENT)
