"""Drift thresholds: documented defaults, overridable per model and per feature.

Each method has a warn and a drift level. Distances (psi, wasserstein, js) flag when the
value reaches the level; tests (ks, chi2) flag when the p-value falls below it.

Defaults (docs/drift.md explains the choice):
- psi          warn 0.10, drift 0.20 (the credit-scoring rule of thumb)
- wasserstein  warn 0.05, drift 0.10 (normed by the reference std; Evidently's default)
- js           warn 0.05, drift 0.10 (Jensen-Shannon distance; Evidently's default)
- ks           p < 0.10 warn, p < 0.05 drift
- chi2         p < 0.10 warn, p < 0.05 drift

Only the ``verdict`` methods decide whether a feature has drifted; the others are reported
alongside. By default numeric features are judged by psi and wasserstein, categorical ones
by psi and js. KS and chi-squared stay advisory: on hourly windows of thousands of rows
their p-values call practically irrelevant differences significant.

Overrides (a JSON/TOML-shaped mapping)::

    {"min_samples": 200,
     "models": {"barn-temp": {"verdict": {"numeric": ["psi"]},
                              "methods": {"psi": {"warn": 0.15, "drift": 0.3}},
                              "features": {"humidity": {"psi": {"drift": 0.5}}}}}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("psi", "ks", "wasserstein", "js", "chi2")
P_VALUE_METHODS = frozenset({"ks", "chi2"})
NUMERIC_METHODS = ("psi", "ks", "wasserstein", "js")
CATEGORICAL_METHODS = ("psi", "js", "chi2")

OK, WARN, DRIFT, INSUFFICIENT = 0, 1, 2, -1
STATUS_NAMES = {OK: "ok", WARN: "warn", DRIFT: "drift", INSUFFICIENT: "insufficient"}


@dataclass(frozen=True)
class Level:
    warn: float
    drift: float


DEFAULT_LEVELS: dict[str, Level] = {
    "psi": Level(0.10, 0.20),
    "wasserstein": Level(0.05, 0.10),
    "js": Level(0.05, 0.10),
    "ks": Level(0.10, 0.05),
    "chi2": Level(0.10, 0.05),
}
DEFAULT_VERDICT = {"numeric": ("psi", "wasserstein"), "categorical": ("psi", "js")}
DEFAULT_MIN_SAMPLES = 100


def classify(method: str, values: np.ndarray, warn: np.ndarray, drift: np.ndarray) -> np.ndarray:
    """Status codes (OK/WARN/DRIFT) for values of one method; NaN counts as OK."""
    v = np.asarray(values, dtype=np.float64)
    if method in P_VALUE_METHODS:
        return np.where(v < drift, DRIFT, np.where(v < warn, WARN, OK))
    return np.where(v >= drift, DRIFT, np.where(v >= warn, WARN, OK))


@dataclass
class ThresholdConfig:
    levels: dict[str, Level] = field(default_factory=lambda: dict(DEFAULT_LEVELS))
    verdict: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_VERDICT))
    min_samples: int = DEFAULT_MIN_SAMPLES
    models: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> ThresholdConfig:
        cfg = cls()
        if not doc:
            return cfg
        unknown = set(doc) - {"min_samples", "methods", "verdict", "models"}
        if unknown:
            raise ValueError(f"drift thresholds: unknown keys {sorted(unknown)}")
        if "min_samples" in doc:
            cfg.min_samples = _pos_int(doc["min_samples"], "min_samples")
        cfg.levels = _levels(doc.get("methods", {}), cfg.levels, "methods")
        cfg.verdict = _verdict(doc.get("verdict", {}), cfg.verdict, "verdict")
        models = doc.get("models", {})
        if not isinstance(models, Mapping):
            raise ValueError("drift thresholds: 'models' must be an object")
        for name, m in models.items():
            where = f"models.{name}"
            if not isinstance(m, Mapping):
                raise ValueError(f"drift thresholds: {where} must be an object")
            bad = set(m) - {"methods", "verdict", "features", "min_samples"}
            if bad:
                raise ValueError(f"drift thresholds: {where}: unknown keys {sorted(bad)}")
            _levels(m.get("methods", {}), cfg.levels, f"{where}.methods")
            _verdict(m.get("verdict", {}), cfg.verdict, f"{where}.verdict")
            for feat, fm in (m.get("features") or {}).items():
                _levels(fm, cfg.levels, f"{where}.features.{feat}")
            if "min_samples" in m:
                _pos_int(m["min_samples"], f"{where}.min_samples")
        cfg.models = {k: dict(v) for k, v in models.items()}
        return cfg

    def for_model(self, model: str) -> ModelThresholds:
        m = self.models.get(model, {})
        return ModelThresholds(
            levels=_levels(m.get("methods", {}), self.levels, ""),
            verdict=_verdict(m.get("verdict", {}), self.verdict, ""),
            features={
                f: _levels(v, {}, "", partial=True) for f, v in (m.get("features") or {}).items()
            },
            min_samples=int(m.get("min_samples", self.min_samples)),
        )


@dataclass(frozen=True)
class ModelThresholds:
    levels: dict[str, Level]
    verdict: dict[str, tuple[str, ...]]
    features: dict[str, dict[str, Level]]  # partial overrides per feature
    min_samples: int

    def level(self, method: str, feature: str) -> Level:
        return self.features.get(feature, {}).get(method, self.levels[method])

    def arrays(self, method: str, features: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(warn[F], drift[F]) for one method over the given features."""
        lv = [self.level(method, f) for f in features]
        return np.array([x.warn for x in lv]), np.array([x.drift for x in lv])

    def as_dict(self, features: Sequence[str]) -> dict[str, Any]:
        return {
            "min_samples": self.min_samples,
            "verdict": {k: list(v) for k, v in self.verdict.items()},
            "methods": {k: vars(v) for k, v in self.levels.items()},
            "features": {
                f: {k: vars(v) for k, v in self.features[f].items()}
                for f in features
                if f in self.features
            },
        }


def _pos_int(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"drift thresholds: {where} must be a positive integer")
    return v


def _levels(
    doc: Any, base: Mapping[str, Level], where: str, partial: bool = False
) -> dict[str, Level]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"drift thresholds: {where} must be an object")
    out = dict(base)
    for method, lv in doc.items():
        if method not in METHODS:
            raise ValueError(f"drift thresholds: {where}: unknown method {method!r}; use {METHODS}")
        if not isinstance(lv, Mapping) or set(lv) - {"warn", "drift"}:
            raise ValueError(f"drift thresholds: {where}.{method} takes only 'warn' and 'drift'")
        cur = out.get(method, DEFAULT_LEVELS[method])
        warn = lv.get("warn", cur.warn)
        drift = lv.get("drift", cur.drift)
        for name, x in (("warn", warn), ("drift", drift)):
            if not isinstance(x, int | float) or isinstance(x, bool) or x < 0:
                raise ValueError(f"drift thresholds: {where}.{method}.{name} must be a number >= 0")
        out[method] = Level(float(warn), float(drift))
    if partial:
        return {k: v for k, v in out.items() if k in doc}
    return out


def _verdict(
    doc: Any, base: Mapping[str, tuple[str, ...]], where: str
) -> dict[str, tuple[str, ...]]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"drift thresholds: {where} must be an object")
    out = dict(base)
    for kind, methods in doc.items():
        allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"drift thresholds: {where}: kind must be 'numeric' or 'categorical'")
        if not isinstance(methods, list) or not methods or any(m not in allowed for m in methods):
            raise ValueError(
                f"drift thresholds: {where}.{kind} must be a non-empty list of {allowed}"
            )
        out[kind] = tuple(methods)
    return out
