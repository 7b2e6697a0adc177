"""Recent history of what gateways report about serving, for the dashboard's plots.

Health reports (``up/health``) carry cumulative counters per model (requests, errors) and
the current p99. The database keeps only the latest report per gateway (the rollout gates
read it), so this keeps the last ``POINTS`` reports per gateway and model in memory and
turns them into series: requests per second, error rate and p99. In memory on purpose:
it is a view for the next hours, rebuilt from the next reports after a restart; long-term
history is Prometheus's job (deploy/grafana).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any

from control_plane.gateway_reports import HealthReport, parse
from farmiq import topics

POINTS = 240
MAX_SERIES = 2000  # (gateway, model) pairs kept; the least recently heard from go first
SERVICE = "ops_history"


class HealthHistory:
    def __init__(self, points: int = POINTS, max_series: int = MAX_SERIES) -> None:
        self.points = points
        self.max_series = max_series
        self._series: dict[tuple[str, str], deque[tuple[float, int, int, float | None]]] = {}
        self._lock = threading.Lock()

    def on_health(self, device_id: str, payload: bytes) -> None:
        report = parse(HealthReport, device_id, topics.HEALTH, payload)
        if report is None:
            return
        now = time.time()
        with self._lock:
            for model, m in report.models.items():
                key = (device_id, model)
                q = self._series.pop(key, None) or deque(maxlen=self.points)
                q.append((now, m.requests, m.errors, m.p99_ms))
                self._series[key] = q  # re-inserted: most recent last
            while len(self._series) > self.max_series:
                self._series.pop(next(iter(self._series)))

    def series(self, limit: int = 12) -> list[dict[str, Any]]:
        """The ``limit`` busiest (gateway, model) pairs: [t, req/s], [t, error rate], [t, p99]."""
        with self._lock:
            items = [(k, list(q)) for k, q in self._series.items()]
        out = []
        for (device, model), pts in items:
            rate, err = [], []
            for (t0, r0, e0, _), (t1, r1, e1, _) in itertools.pairwise(pts):
                dt, dr = t1 - t0, r1 - r0
                if dt <= 0 or dr < 0:  # counters restart with a new version
                    continue
                rate.append([round(t1, 1), round(dr / dt, 3)])
                err.append([round(t1, 1), round((e1 - e0) / dr, 4) if dr else 0.0])
            p99 = [[round(t, 1), round(p, 3)] for t, _, _, p in pts if p is not None]
            total = pts[-1][1] if pts else 0
            out.append({"device_id": device, "model": model, "requests": total,
                        "rate": rate, "error_rate": err, "p99_ms": p99})  # fmt: skip
        out.sort(key=lambda s: -int(s["requests"]))  # type: ignore[call-overload]
        return out[:limit]


def setup(ctx: Any) -> None:
    history = ctx.services[SERVICE] = HealthHistory()
    if ctx.mqtt is not None:
        ctx.mqtt.on(topics.HEALTH, history.on_health)
