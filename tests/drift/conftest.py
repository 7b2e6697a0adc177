"""Synthetic barns: a reference from "training" data and gateways with known shifts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from control_plane.drift.ingest import DriftService
from edge_agent.telemetry.drift_stats import DriftStats, encode_window
from farmiq.drift_reference import build_reference

FEATURES = ["temp_c", "humidity", "co2_ppm", "feed_kg", "water_l", "weight_g"]
MEANS = np.array([24.0, 65.0, 1500.0, 120.0, 240.0, 1800.0])
SCALES = np.array([2.0, 8.0, 300.0, 15.0, 30.0, 250.0])


def barn(
    n: int, seed: int, shift: dict[str, float] | None = None, scale: dict[str, float] | None = None
) -> np.ndarray:
    """Rows of a barn; ``shift`` moves a feature's mean by that many standard deviations,
    ``scale`` multiplies its spread."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(FEATURES)))
    for name, k in (scale or {}).items():
        z[:, FEATURES.index(name)] *= k
    for name, k in (shift or {}).items():
        z[:, FEATURES.index(name)] += k
    return MEANS + z * SCALES


def pens(n: int, seed: int, probs: tuple[float, ...] = (0.5, 0.3, 0.2)) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(probs), size=n, p=probs).astype(float)


def predict(x: np.ndarray) -> np.ndarray:
    return (x[:, 0] - 24.0) / 2.0 + (x[:, 1] - 65.0) / 8.0  # a "model"


@pytest.fixture(scope="session")
def reference_data() -> dict[str, np.ndarray]:
    x = barn(5000, seed=1)
    cols = {f: x[:, i] for i, f in enumerate(FEATURES)}
    cols["pen"] = pens(5000, seed=2)
    return cols


@pytest.fixture(scope="session")
def reference(reference_data: dict[str, np.ndarray]) -> dict[str, Any]:
    x = np.column_stack([reference_data[f] for f in FEATURES])
    return build_reference(reference_data, categorical=["pen"], prediction=predict(x))


@pytest.fixture
def service(tmp_path: Path, reference: dict[str, Any]) -> DriftService:
    svc = DriftService(create_engine(f"sqlite:///{tmp_path / 'cp.db'}"))
    svc.create_tables()
    svc.set_reference("barn", reference)
    return svc


WindowFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_window(reference: dict[str, Any]) -> WindowFactory:
    def make(
        device: str,
        n: int = 2000,
        seed: int = 0,
        start: float = 1000.0,
        farm: str | None = None,
        shift: dict[str, float] | None = None,
        scale: dict[str, float] | None = None,
        pen_probs: tuple[float, ...] = (0.5, 0.3, 0.2),
    ) -> dict[str, Any]:
        x = np.column_stack([barn(n, seed, shift, scale), pens(n, seed + 1, pen_probs)])
        stats = DriftStats(device, farm_id=farm, clock=lambda: start)
        stats.register("barn", "1", reference)
        stats.observe("barn", "1", x, predict(x))
        (w,) = stats.close_window(now=start + 60)
        w["_raw"] = x  # for comparisons with scipy/Evidently; not part of the wire format
        return w

    return make


def wire(w: dict[str, Any]) -> bytes:
    return encode_window({k: v for k, v in w.items() if not k.startswith("_")})
