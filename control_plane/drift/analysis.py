"""Turn aggregated window counts into per-feature drift statistics and verdicts.

Pure numpy over arrays shaped [groups, ...] — a group is a device, a farm or the fleet —
so every level of the fleet is analysed with the same few vectorised calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from control_plane.drift import metrics
from control_plane.drift.thresholds import (
    DRIFT,
    INSUFFICIENT,
    METHODS,
    OK,
    STATUS_NAMES,
    ModelThresholds,
    classify,
)
from farmiq.drift_reference import PREDICTION
from farmiq.wire.drift_layout import ColumnLayout


@dataclass(frozen=True)
class RefLayout:
    """The reference as padded arrays, in the column order gateways send."""

    names: list[str]  # features, then the prediction column if any
    kinds: list[str]
    slots: np.ndarray  # [C]
    offsets: np.ndarray  # [C] into a window's flat counts
    total: int
    gather: np.ndarray  # [C, B] index into flat counts + 1 zero slot (padding -> total)
    ref_counts: np.ndarray  # [C, B] float
    bounds: np.ndarray  # [C, B + 1] bin boundaries (numeric; tails filled per group)
    ref_min: np.ndarray  # [C]
    ref_max: np.ndarray
    ref_std: np.ndarray
    numeric: np.ndarray  # [C] bool
    n_features: int  # input features (the prediction column, if any, comes after)

    @classmethod
    def from_reference(cls, ref: Mapping[str, Any]) -> RefLayout:
        cols = ColumnLayout.from_reference(ref)  # the one reading of the layout (farmiq.wire)
        specs = list(zip(cols.names, cols.specs, strict=True))
        c = len(specs)
        slots, offsets, total = cols.slots, cols.offsets, cols.total
        b = int(slots.max())
        pos = np.arange(b)
        gather = np.where(pos[None, :] < slots[:, None], offsets[:, None] + pos[None, :], total)
        ref_counts = np.zeros((c, b))
        bounds = np.tile(np.arange(b + 1, dtype=np.float64), (c, 1))
        ref_min = np.full(c, np.nan)
        ref_max = np.full(c, np.nan)
        ref_std = np.full(c, np.nan)
        numeric = np.zeros(c, dtype=bool)
        for i, (_, s) in enumerate(specs):
            ref_counts[i, : slots[i]] = s["counts"]
            if s["kind"] == "numeric":
                numeric[i] = True
                e = np.asarray(s["edges"], dtype=np.float64)
                lo = float(s.get("min", e[0]))
                hi = float(s.get("max", e[-1]))
                ref_min[i], ref_max[i] = min(lo, e[0]), max(hi, e[-1])
                # [lo, e0, ..., eE, hi, hi, ...]: the tails are filled in per group
                bounds[i, 0] = ref_min[i]
                bounds[i, 1 : 1 + e.size] = e
                bounds[i, 1 + e.size :] = ref_max[i]
                ref_std[i] = float(s["std"]) if "std" in s else _binned_std(e, ref_counts[i])
        return cls(
            names=cols.names,
            kinds=cols.kinds,
            slots=slots,
            offsets=offsets,
            total=total,
            gather=gather,
            ref_counts=ref_counts,
            bounds=bounds,
            ref_min=ref_min,
            ref_max=ref_max,
            ref_std=ref_std,
            numeric=numeric,
            n_features=cols.n_features,
        )


def _binned_std(edges: np.ndarray, counts: np.ndarray) -> float:
    mids = np.concatenate([[edges[0]], (edges[:-1] + edges[1:]) / 2, [edges[-1]]])
    w = counts[: mids.size]
    if w.sum() == 0:
        return 0.0
    mean = float((mids * w).sum() / w.sum())
    return float(np.sqrt(((mids - mean) ** 2 * w).sum() / w.sum()))


@dataclass
class Groups:
    """Summed window statistics per group (device, farm or fleet)."""

    labels: list[str]
    counts: np.ndarray  # [G, total + 1] (last column stays zero: padding target)
    missing: np.ndarray  # [G, C]
    invalid: np.ndarray  # [G, C]
    mins: np.ndarray  # [G, C] NaN when empty
    maxs: np.ndarray
    rows: np.ndarray  # [G] rows observed
    windows: np.ndarray  # [G] windows summed

    def regroup(self, key: Sequence[str]) -> Groups:
        """Sum groups that share a key (devices -> farms, anything -> fleet)."""
        labels = sorted(set(key))
        idx = {k: i for i, k in enumerate(labels)}
        g = np.array([idx[k] for k in key], dtype=np.int64)
        n = len(labels)

        def add(a: np.ndarray) -> np.ndarray:
            out = np.zeros((n, *a.shape[1:]), dtype=a.dtype)
            np.add.at(out, g, a)
            return out

        mins = np.full((n, self.mins.shape[1]), np.nan)
        maxs = np.full((n, self.maxs.shape[1]), np.nan)
        np.fmin.at(mins, g, self.mins)
        np.fmax.at(maxs, g, self.maxs)
        return Groups(
            labels,
            add(self.counts),
            add(self.missing),
            add(self.invalid),
            mins,
            maxs,
            add(self.rows),
            add(self.windows),
        )


@dataclass
class Analysis:
    level: str
    labels: list[str]
    columns: list[str]
    kinds: list[str]
    n_features: int
    values: dict[str, np.ndarray]  # method -> [G, C] (NaN where not applicable)
    status: dict[str, np.ndarray]  # method -> [G, C] status codes
    verdict: np.ndarray  # [G, C]
    n: np.ndarray  # [G, C] finite values per column
    missing_rate: np.ndarray  # [G, C]
    invalid_rate: np.ndarray
    rows: np.ndarray  # [G]
    windows: np.ndarray

    def drifted_share(self) -> np.ndarray:
        """Share of input features (prediction excluded) with a drift verdict, per group."""
        v = self.verdict[:, : self.n_features]
        judged = (v != INSUFFICIENT).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(judged > 0, (v == DRIFT).sum(axis=1) / judged, 0.0)  # type: ignore[no-any-return]

    def group(self, i: int, methods: Sequence[str] = METHODS) -> dict[str, Any]:
        feats: dict[str, Any] = {}
        for j, name in enumerate(self.columns):
            stats: dict[str, Any] = {}
            for m in methods:
                v = self.values[m][i, j]
                if np.isnan(v):
                    continue
                stats[m] = {"value": float(v), "status": STATUS_NAMES[int(self.status[m][i, j])]}
            feats[name] = {
                "kind": self.kinds[j],
                "verdict": STATUS_NAMES[int(self.verdict[i, j])],
                "n": int(self.n[i, j]),
                "missing_rate": float(self.missing_rate[i, j]),
                "invalid_rate": float(self.invalid_rate[i, j]),
                "methods": stats,
            }
        pred = feats.pop(PREDICTION, None)
        drifted = [f for f, d in feats.items() if d["verdict"] == "drift"]
        share = float(self.drifted_share()[i])
        return {
            "id": self.labels[i],
            "rows": int(self.rows[i]),
            "windows": int(self.windows[i]),
            "drift_detected": bool(drifted),
            "drifted_features": drifted,
            "drift_share": share,
            "max_psi": _nanmax(self.values["psi"][i, : self.n_features]),
            "features": feats,
            "prediction": pred,
        }

    def summary(self, i: int) -> dict[str, Any]:
        g = self.group(i, methods=())
        return {
            k: g[k]
            for k in (
                "id",
                "rows",
                "windows",
                "drift_detected",
                "drifted_features",
                "drift_share",
                "max_psi",
            )
        } | {"prediction_verdict": g["prediction"]["verdict"] if g["prediction"] else None}


def _nanmax(a: np.ndarray) -> float | None:
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else None


def analyze(layout: RefLayout, groups: Groups, th: ModelThresholds, level: str) -> Analysis:
    """Every statistic for every group and column, in one vectorised pass."""
    cur = groups.counts[:, layout.gather]  # [G, C, B]
    cur_p, n_cur = metrics.proportions(cur)
    ref_p, n_ref = metrics.proportions(layout.ref_counts)
    g, c = n_cur.shape
    num = layout.numeric
    values: dict[str, np.ndarray] = {m: np.full((g, c), np.nan) for m in METHODS}
    values["psi"] = metrics.psi(ref_p, cur_p)
    values["js"] = metrics.jensen_shannon(ref_p, cur_p)
    if num.any():
        ks_stat, ks_p = metrics.ks(ref_p[num], cur_p[:, num], n_ref[num], n_cur[:, num])
        values["ks"][:, num] = ks_p
        # Tails span from the lowest to the highest value either side has seen.
        lo = np.fmin(groups.mins[:, num], layout.ref_min[num])
        hi = np.fmax(groups.maxs[:, num], layout.ref_max[num])
        bounds = np.broadcast_to(layout.bounds[num], (g, *layout.bounds[num].shape)).copy()
        bounds[:, :, 0] = np.minimum(bounds[:, :, 0], lo)
        last = layout.slots[num]  # index of the upper bound of the upper tail bin
        pos = np.arange(bounds.shape[-1])
        bounds = np.where(pos[None, None, :] >= last[None, :, None], hi[:, :, None], bounds)
        w = metrics.wasserstein(ref_p[num], cur_p[:, num], bounds)
        values["wasserstein"][:, num] = w / np.maximum(layout.ref_std[num], metrics.STD_FLOOR)
        values["ks_statistic"] = np.full((g, c), np.nan)
        values["ks_statistic"][:, num] = ks_stat
    if (~num).any():
        _, chi_p = metrics.chi2(layout.ref_counts[~num], cur[:, ~num], layout.slots[~num])
        values["chi2"][:, ~num] = chi_p
    status: dict[str, np.ndarray] = {}
    for m in METHODS:
        warn, drift = th.arrays(m, layout.names)
        status[m] = np.where(np.isnan(values[m]), OK, classify(m, values[m], warn, drift))
    verdict = np.zeros((g, c), dtype=np.int64)
    for j, kind in enumerate(layout.kinds):
        for m in th.verdict[kind]:
            verdict[:, j] = np.maximum(verdict[:, j], status[m][:, j])
    verdict = np.where(n_cur < th.min_samples, INSUFFICIENT, verdict)
    total = n_cur + groups.missing + groups.invalid
    with np.errstate(invalid="ignore", divide="ignore"):
        missing_rate = np.where(total > 0, groups.missing / total, 0.0)
        invalid_rate = np.where(total > 0, groups.invalid / total, 0.0)
    return Analysis(
        level,
        groups.labels,
        layout.names,
        layout.kinds,
        layout.n_features,
        values,
        status,
        verdict,
        n_cur,
        missing_rate,
        invalid_rate,
        groups.rows,
        groups.windows,
    )
