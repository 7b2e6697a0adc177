"""What a gateway reports about its health: inference counters per model version,
resources and link quality. Published on ``up/health`` on connect, after every install
and every ``interval_s``; the rollout gates read it (error rate, p99 latency)."""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil


@dataclass
class _Counters:
    version: int
    requests: int = 0
    errors: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class InferenceStats:
    """Counters restart when a model's version changes, so a gate sees the new version only."""

    def __init__(self) -> None:
        self._by_model: dict[str, _Counters] = {}

    def record(
        self, model: str, version: int | None, latency_ms: float | None, error: bool
    ) -> None:
        c = self._by_model.get(model)
        if c is None or (version is not None and c.version != version):
            c = self._by_model[model] = _Counters(version or 0)
        c.requests += 1
        c.errors += int(error)
        if latency_ms is not None and not error:
            c.latencies.append(latency_ms)

    def record_ok(self, model: str, version: int, latencies_ms: list[float]) -> None:
        """Answers of one version that all succeeded (the observer's batches)."""
        c = self._by_model.get(model)
        if c is None or c.version != version:
            c = self._by_model[model] = _Counters(version)
        c.requests += len(latencies_ms)
        c.latencies.extend(latencies_ms)

    def errors_since_load(self, model: str) -> tuple[int, int]:
        c = self._by_model.get(model)
        return (c.errors, c.requests) if c else (0, 0)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, c in self._by_model.items():
            lat = np.fromiter(c.latencies, dtype=float)
            out[name] = {
                "version": c.version,
                "requests": c.requests,
                "errors": c.errors,
                "error_rate": (c.errors / c.requests) if c.requests else 0.0,
                "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            }
        return out


def resources(state_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        out["load1"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        out["mem_available_mb"] = psutil.virtual_memory().available // (1024 * 1024)
    except OSError:
        pass
    try:
        out["disk_free_mb"] = shutil.disk_usage(state_dir).free // (1024 * 1024)
    except OSError:
        pass
    out["ts"] = time.time()
    return out
