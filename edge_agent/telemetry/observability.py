"""Prometheus metrics of the gateway agent, served on the local API at ``GET /metrics``.

Nothing here sits on the request path. The hybrid router already counts every decision
and keeps fine latency histograms (edge_agent/inference/routing_metrics.py); a custom collector
reads those, and the other components' state, when Prometheus scrapes:
inference latency histograms per model and target, end-to-end request latency, routing
decisions, errors and rejections, cache hits, escalations, circuit-breaker states,
readiness, broker connection, MQTT reconnects, outbox depth, loaded models, reloads, and
the process (``process_*``: RSS, CPU seconds, open files, start time).

One registry per agent (not prometheus_client's global one, so several agents can live in
one test process). Components can add their own families with
``metrics.add_source(fn)`` where ``fn()`` yields prometheus_client metric families,
or report a breaker the router does not hold with ``metrics.set_breaker(name, state)``.
The metrics read narrow ports (``MetricsPorts``), never the agent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edge_agent.api.local_api import LocalApi, Request, Response

if TYPE_CHECKING:
    from edge_agent.inference.router import Router
    from edge_agent.models.serving import ModelSet
    from edge_agent.uplink.outbox import Outbox
    from edge_agent.uplink.port import LinkState


@dataclass
class MetricsPorts:
    """What the metrics read: identity, readiness, the link, models, outbox, router."""

    device_id: str
    farm_id: str
    started_at: float
    ready: Callable[[], tuple[bool, str]]
    link: LinkState
    models: ModelSet
    router: Router
    outbox: Outbox | None = None
    reloads: Callable[[], int] = lambda: 0


log = logging.getLogger(__name__)

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "half-open": 1.0, "open": 2.0}
# Export every 6th bound of the router's 12%-spaced buckets (about 2x apart, 20 us..60 s):
# exact cumulative counts, and a series count Prometheus is happy with.
BUCKET_STRIDE = 6

Source = Callable[[], Iterable[Metric]]


class AgentMetrics:
    def __init__(self, ports: MetricsPorts) -> None:
        self.agent = ports
        self.registry = CollectorRegistry(auto_describe=False)
        self.breakers: dict[str, str] = {}
        self.sources: list[Source] = []
        self.registry.register(_AgentCollector(self))
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...
        # read from /proc at scrape time (Linux; nothing elsewhere).
        ProcessCollector(registry=self.registry)

    def set_breaker(self, target: str, state: str) -> None:
        """Report a circuit breaker the router does not hold: closed, half_open or open."""
        self.breakers[target] = state

    def add_source(self, fn: Source) -> None:
        self.sources.append(fn)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AgentCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        agent = self.metrics.agent
        info = GaugeMetricFamily(
            "farmiq_agent_info", "The agent's identity", labels=["device_id", "farm_id", "version"]
        )
        from farmiq import __version__

        info.add_metric([agent.device_id, agent.farm_id, __version__], 1)
        yield info
        ok, _ = agent.ready()
        yield GaugeMetricFamily(
            "farmiq_agent_ready", "1 when /ready answers 200", value=1 if ok else 0
        )
        yield GaugeMetricFamily(
            "farmiq_agent_uptime_seconds",
            "Seconds since start",
            value=time.time() - agent.started_at,
        )
        yield GaugeMetricFamily(
            "farmiq_agent_broker_connected",
            "1 while the MQTT link is up",
            value=1 if agent.link.connected.is_set() else 0,
        )
        yield CounterMetricFamily(
            "farmiq_agent_mqtt_reconnects",
            "MQTT reconnections since start",
            value=agent.link.reconnects,
        )
        models = GaugeMetricFamily(
            "farmiq_agent_model_loaded",
            "Loaded models (1 = warm)",
            labels=["model", "version", "runtime"],
        )
        for m in agent.models.all():
            models.add_metric([m.name, str(m.version), m.manifest.runtime], 1 if m.warm else 0)
        yield models
        yield from _outbox(agent)
        snapshot = _router_snapshot(agent)
        yield from _routing(agent, snapshot)
        yield from _breakers(snapshot, self.metrics.breakers)
        yield CounterMetricFamily(
            "farmiq_agent_config_reloads", "SIGHUP reloads", value=agent.reloads()
        )
        for source in list(self.metrics.sources):
            try:
                yield from source()
            except Exception:  # one broken source must not break the scrape
                log.exception("metrics source %r failed", source)


def _outbox(agent: MetricsPorts) -> Iterator[Metric]:
    outbox = getattr(agent, "outbox", None)
    if outbox is None or not hasattr(outbox, "pending"):
        return
    try:
        depth, size = outbox.pending(), outbox.size_bytes()
    except Exception as exc:
        log.warning("outbox unreadable for metrics: %s", exc)
        return
    yield GaugeMetricFamily(
        "farmiq_agent_outbox_depth", "Items waiting for the cloud's acknowledgement", value=depth
    )
    yield GaugeMetricFamily("farmiq_agent_outbox_bytes", "Bytes held by the outbox", value=size)
    yield CounterMetricFamily(
        "farmiq_agent_outbox_merges",
        "Drift windows merged to stay in budget",
        value=getattr(outbox, "merges", 0),
    )


def _router_snapshot(agent: MetricsPorts) -> dict[str, Any]:
    router = getattr(agent, "router", None)
    if router is None:
        return {}
    try:
        return router.snapshot()  # type: ignore[no-any-return]  # also folds fast-path counts
    except Exception:
        log.exception("router snapshot failed")
        return {}


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_hist(fam: HistogramMetricFamily, labels: list[str], hist: Any) -> None:
    from edge_agent.inference.routing_metrics import BOUNDS_MS

    counts = hist.counts  # counts[i]: observations <= BOUNDS_MS[i] and > the bound before
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for i, bound in enumerate(BOUNDS_MS):
        cumulative += counts[i]
        if i % BUCKET_STRIDE == 0:
            buckets.append((repr(round(bound / 1000, 9)), float(cumulative)))
    buckets.append(("+Inf", float(hist.n)))
    fam.add_metric(labels, buckets, sum_value=hist.total / 1000)


def _routing(agent: MetricsPorts, snapshot: dict[str, Any]) -> Iterator[Metric]:
    router = getattr(agent, "router", None)
    rm = getattr(router, "metrics", None)
    if rm is None:
        return
    per_target = _histogram(
        "farmiq_agent_inference_latency_seconds",
        "Inference latency on each serving target (edge, mcu, cloud, ...)",
        ["model", "target"],
    )
    errors = CounterMetricFamily(
        "farmiq_agent_inference_errors",
        "Failed runs per model and target",
        labels=["model", "target"],
    )
    for (model, target), st in sorted(getattr(rm, "_targets", {}).items()):
        _add_hist(per_target, [model, target], st.hist)
        errors.add_metric([model, target], st.errors)
    yield per_target
    yield errors
    requests = _histogram(
        "farmiq_agent_request_latency_seconds",
        "End-to-end inference request latency (routing, cache, fallbacks included)",
        ["model"],
    )
    for model, hist in sorted(getattr(rm, "_requests", {}).items()):
        _add_hist(requests, [model], hist)
    yield requests
    decisions = CounterMetricFamily(
        "farmiq_agent_routing_decisions",
        "Where requests were served and why",
        labels=["model", "target", "reason"],
    )
    for (model, target, reason), n in sorted(rm.decisions.items()):
        decisions.add_metric([model, target, reason], n)
    yield decisions
    rejected = CounterMetricFamily(
        "farmiq_agent_inference_rejected",
        "Requests refused with a 4xx (bad inputs)",
        labels=["model"],
    )
    for model, n in sorted(rm.rejected.items()):
        rejected.add_metric([model], n)
    yield rejected
    cache = CounterMetricFamily(
        "farmiq_agent_result_cache", "Result cache lookups", labels=["model", "result"]
    )
    for model, n in sorted(rm.cache_hits.items()):
        cache.add_metric([model, "hit"], n)
    for model, n in sorted(rm.cache_misses.items()):
        cache.add_metric([model, "miss"], n)
    yield cache
    esc = CounterMetricFamily(
        "farmiq_agent_escalations",
        "Confidence-cascade escalations by outcome",
        labels=["model", "outcome"],
    )
    for (model, outcome), n in sorted(rm.escalations.items()):
        esc.add_metric([model, outcome], n)
    yield esc
    queues = GaugeMetricFamily(
        "farmiq_agent_queue_depth", "Requests waiting per model", labels=["model"]
    )
    try:
        for model, depth in sorted(router.queue_depths().items()):  # type: ignore[union-attr]
            queues.add_metric([model], depth)
    except Exception:
        pass
    yield queues


def _breakers(snapshot: dict[str, Any], recorded: dict[str, str]) -> Iterator[Metric]:
    states = dict(recorded)
    for target, snap in (snapshot.get("breakers") or {}).items():
        state = snap.get("state") if isinstance(snap, dict) else snap
        states[str(target)] = str(state)
    if not states:
        return
    g = GaugeMetricFamily(
        "farmiq_agent_breaker_state",
        "Circuit breaker per target: 0 closed, 1 half-open, 2 open",
        labels=["target"],
    )
    for target, state in sorted(states.items()):
        g.add_metric([target], BREAKER_VALUES.get(state.lower(), -1.0))
    yield g


def install_metrics(api: LocalApi, ports: MetricsPorts) -> AgentMetrics:
    """Create the agent's metrics and add ``GET /metrics`` to its local API."""
    metrics = AgentMetrics(ports)

    async def scrape(req: Request) -> Response:
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST.encode())

    api.add("GET", "/metrics", scrape)
    return metrics
