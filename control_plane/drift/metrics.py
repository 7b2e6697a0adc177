"""Drift statistics from histograms, vectorised over a whole fleet at once.

Every function takes the reference as proportions ``ref[F, B]`` and the current data as
counts ``cur[..., F, B]`` (any leading axes: devices, farms), with features padded to a
common bin count B by zero bins, which contribute nothing to any statistic. One call
computes a statistic for every device and feature, so a fleet of 1,000 gateways x 20
features is a few array operations, not 20,000 Python calls.

Numeric bins are [lo, e0), [e0, e1), ..., [eB-1, eB], (eB, hi]: the reference edges plus
an open tail on each side whose extent is the observed min/max. Inside a bin the data are
taken as uniform (the CDF is linear), which makes KS exact at the edges and gives
Wasserstein as the exact area between two piecewise-linear CDFs.

Definitions (and why they match the raw-data versions, see tests/drift/test_metrics.py):
- PSI = sum((c - r) * ln(c / r)) with proportions floored at ``EPS``.
- KS: D = max |F_cur - F_ref| over bin edges (a lower bound of the raw KS statistic, equal
  to it when the largest gap sits on an edge); p-value from the asymptotic Kolmogorov law
  with Stephens' small-sample correction, n_eff = n_ref * n_cur / (n_ref + n_cur).
- Wasserstein-1 = integral |F_cur - F_ref| dx, divided by the reference standard deviation
  ("normed", as Evidently does, so one threshold fits features of any scale).
- Jensen-Shannon distance (natural log, as scipy.spatial.distance.jensenshannon).
- chi-squared goodness of fit of current counts against reference proportions (add-0.5
  smoothing so an unseen category counts as drift instead of dividing by zero).
"""

from __future__ import annotations

import numpy as np
from scipy import special

EPS = 1e-4
STD_FLOOR = 1e-3  # Evidently's floor for the normalising standard deviation


def proportions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts [..., F, B] -> (proportions, totals [..., F]); empty rows stay all zero."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n[..., None] > 0, counts / n[..., None], 0.0)
    return p, n


def psi(ref_p: np.ndarray, cur_p: np.ndarray) -> np.ndarray:
    r = np.maximum(ref_p, EPS)
    c = np.maximum(cur_p, EPS)
    return ((c - r) * np.log(c / r)).sum(axis=-1)  # type: ignore[no-any-return]


def cdf_gap(ref_p: np.ndarray, cur_p: np.ndarray) -> np.ndarray:
    """F_cur - F_ref at every bin boundary, [..., F, B + 1] (starts at 0)."""
    d = np.cumsum(cur_p - ref_p, axis=-1)
    zero = np.zeros((*d.shape[:-1], 1))
    return np.concatenate([zero, d], axis=-1)


def ks(
    ref_p: np.ndarray, cur_p: np.ndarray, n_ref: np.ndarray, n_cur: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p-value) per [..., F]."""
    stat = np.abs(cdf_gap(ref_p, cur_p)).max(axis=-1)
    n_ref = np.asarray(n_ref, dtype=np.float64)
    n_cur = np.asarray(n_cur, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ne = n_ref * n_cur / (n_ref + n_cur)
        sq = np.sqrt(ne)
        p = special.kolmogorov((sq + 0.12 + 0.11 / sq) * stat)
    p = np.where(ne > 0, np.clip(p, 0.0, 1.0), 1.0)
    return stat, p


def wasserstein(ref_p: np.ndarray, cur_p: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Wasserstein-1 between piecewise-linear CDFs; ``bounds`` [..., F, B + 1]."""
    d = cdf_gap(ref_p, cur_p)
    d0, d1 = d[..., :-1], d[..., 1:]
    w = np.diff(bounds, axis=-1)
    a0, a1 = np.abs(d0), np.abs(d1)
    same_sign = d0 * d1 >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = (d0 * d0 + d1 * d1) / (2 * (a0 + a1))
    area = np.where(same_sign, (a0 + a1) / 2, np.nan_to_num(crossing)) * w
    return area.sum(axis=-1)  # type: ignore[no-any-return]


def jensen_shannon(ref_p: np.ndarray, cur_p: np.ndarray) -> np.ndarray:
    m = (ref_p + cur_p) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_r = np.where(ref_p > 0, ref_p * np.log(ref_p / m), 0.0).sum(axis=-1)
        kl_c = np.where(cur_p > 0, cur_p * np.log(cur_p / m), 0.0).sum(axis=-1)
    js = np.sqrt(np.maximum((kl_r + kl_c) / 2, 0.0))
    # Empty current data: no distance to speak of.
    return np.where(cur_p.sum(axis=-1) > 0, js, 0.0)  # type: ignore[no-any-return]


def chi2(
    ref_counts: np.ndarray, cur_counts: np.ndarray, slots: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, p-value) per [..., F]; ``slots[F]`` real (unpadded) bins per feature."""
    ref_counts = np.asarray(ref_counts, dtype=np.float64)
    cur_counts = np.asarray(cur_counts, dtype=np.float64)
    b = ref_counts.shape[-1]
    real = np.arange(b)[None, :] < np.asarray(slots)[:, None]  # [F, B]
    smoothed = np.where(real, ref_counts + 0.5, 0.0)
    ref_p = smoothed / smoothed.sum(axis=-1, keepdims=True)
    n_cur = cur_counts.sum(axis=-1, keepdims=True)
    expected = ref_p * n_cur
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(real & (expected > 0), (cur_counts - expected) ** 2 / expected, 0.0)
    stat = terms.sum(axis=-1)
    dof = np.maximum(np.asarray(slots) - 1, 1)
    p = special.chdtrc(dof, stat)
    return stat, np.where(n_cur[..., 0] > 0, p, 1.0)
