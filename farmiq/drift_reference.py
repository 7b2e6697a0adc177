"""The drift reference: what "normal" looks like for a model, as fixed-bin histograms.

Built once on the cloud side from the training (or a validation) data and shipped in the
bundle; the gateway bins live traffic with exactly these edges, so windows from every farm
are comparable bin by bin and no raw data has to leave the farm. Format (docs/drift.md)::

    {"format": "farmiq-drift-reference/1",
     "features": {"temp": {"kind": "numeric", "edges": [e0, ..., eB],
                           "counts": [below, b1, ..., bB, above],
                           "mean": m, "std": s, "min": lo, "max": hi, "n": n},
                  "pen":  {"kind": "categorical", "categories": [0, 1, 2],
                           "counts": [c0, c1, c2, other], "n": n}},
     "prediction": {... one spec like a feature ...} | null,
     "sample": {"columns": ["temp", "pen", "__prediction__"], "rows": [[...], ...]} | null}

Numeric bins follow ``numpy.histogram`` inside ``[e0, eB]`` (the last bin is closed) plus
one open tail bin on each side, so a value never falls outside the histogram. Categorical
counts end with one "other" slot for categories the reference never saw.

Light on purpose: numpy only, importable on a gateway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FORMAT = "farmiq-drift-reference/1"
PREDICTION = "__prediction__"
MAX_CATEGORIES = 64
TAIL_QUANTILES = (0.01, 0.025, 0.975, 0.99)


def schema_hash(reference: Mapping[str, Any]) -> str:
    """Identity of the binning (names, kinds, edges, categories, in order): windows and a
    reference with the same hash can be compared bin by bin."""
    specs = list(reference["features"].items())
    if reference.get("prediction") is not None:
        specs.append((PREDICTION, reference["prediction"]))
    parts = [[n, s["kind"], s.get("edges"), s.get("categories")] for n, s in specs]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def numeric_bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index in ``0 .. len(edges)`` for finite values (0: below e0, len(edges): above eB)."""
    idx = np.searchsorted(edges, values, side="right")
    # numpy.histogram convention: the last interior bin includes its right edge.
    idx[values == edges[-1]] = len(edges) - 1
    return idx


def categorical_bin_index(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Index of each value in ``categories``; ``len(categories)`` ("other") when unseen."""
    order = np.argsort(categories, kind="stable")
    sorted_cats = categories[order]
    pos = np.searchsorted(sorted_cats, values)
    pos_c = np.minimum(pos, len(sorted_cats) - 1)
    hit = sorted_cats[pos_c] == values
    return np.where(hit, order[pos_c], len(categories))


def _numeric_spec(x: np.ndarray, bins: int) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        raise ValueError("a numeric reference column needs at least one finite value")
    # Quantile edges: every bin holds about the same share of the reference, which keeps
    # PSI stable (no near-empty bins) and puts resolution where the data is.
    # Two extra cuts in each tail (1% and 2.5%): the outermost quantile bins are the
    # widest, and splitting them keeps the uniform-within-bin assumption that binned
    # Wasserstein relies on honest where a shrinking or widening spread shows first.
    qs = np.union1d(np.linspace(0.0, 1.0, bins + 1), TAIL_QUANTILES if bins >= 4 else [])
    edges = np.unique(np.quantile(finite, qs))
    if edges.size < 2:  # a constant column: one bin around the constant
        c = float(edges[0])
        pad = max(abs(c) * 1e-6, 1e-9)
        edges = np.array([c - pad, c + pad])
    counts = np.bincount(numeric_bin_index(finite, edges), minlength=edges.size + 1)
    return {
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
    }


def _categorical_spec(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x)
    if x.dtype.kind == "f":
        x = x[np.isfinite(x)]
    cats, counts = np.unique(x, return_counts=True)
    if cats.size > MAX_CATEGORIES:
        raise ValueError(f"{cats.size} categories; at most {MAX_CATEGORIES} are supported")
    values = [c.item() if hasattr(c, "item") else c for c in cats]
    return {
        "kind": "categorical",
        "categories": values,
        "counts": [int(c) for c in counts] + [0],
        "n": int(counts.sum()),
    }


def column_spec(x: np.ndarray, *, categorical: bool = False, bins: int = 10) -> dict[str, Any]:
    return _categorical_spec(x) if categorical else _numeric_spec(x, bins)


def build_reference(
    columns: Mapping[str, np.ndarray],
    bins: int = 10,
    *,
    categorical: Sequence[str] = (),
    prediction: np.ndarray | None = None,
    prediction_categorical: bool = False,
    sample_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Reference histograms (and a raw sample for Evidently drill-downs) from training data.

    ``columns`` maps feature name -> 1-D array, in the model's input order. Columns named in
    ``categorical`` (or with a non-numeric dtype) get category counts, the rest quantile bins.
    """
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if not columns:
        raise ValueError("a reference needs at least one column")
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if prediction is not None:
        lengths.add(len(np.asarray(prediction)))
    if len(lengths) != 1:
        raise ValueError(f"columns have different lengths: {sorted(lengths)}")
    cat = set(categorical)
    unknown = cat - set(columns)
    if unknown:
        raise ValueError(f"categorical names unknown columns: {sorted(unknown)}")
    features: dict[str, Any] = {}
    for name, values in columns.items():
        arr = np.asarray(values)
        is_cat = name in cat or arr.dtype.kind not in "biuf"
        features[name] = column_spec(arr, categorical=is_cat, bins=bins)
    pred_spec = None
    if prediction is not None:
        pred_spec = column_spec(
            np.asarray(prediction), categorical=prediction_categorical, bins=bins
        )

    n = lengths.pop()
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
    names = list(columns)
    cols = [np.asarray(columns[k])[take] for k in names]
    if prediction is not None:
        names.append(PREDICTION)
        cols.append(np.asarray(prediction)[take])
    rows = [[_plain(c[i]) for c in cols] for i in range(len(take))]
    return {
        "format": FORMAT,
        "features": features,
        "prediction": pred_spec,
        "sample": {"columns": names, "rows": rows} if len(take) else None,
    }


def _plain(v: Any) -> Any:
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def validate_reference(ref: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first fault in a reference document."""
    feats = ref.get("features")
    if not isinstance(feats, Mapping) or not feats:
        raise ValueError("reference: 'features' must be a non-empty object")
    specs = list(feats.items())
    if ref.get("prediction") is not None:
        specs.append((PREDICTION, ref["prediction"]))
    for name, spec in specs:
        if not isinstance(spec, Mapping):
            raise ValueError(f"reference: feature {name!r} must be an object")
        kind = spec.get("kind")
        counts = spec.get("counts")
        if not isinstance(counts, list) or any(
            not isinstance(c, int | float) or c < 0 for c in counts
        ):
            raise ValueError(f"reference: feature {name!r}: 'counts' must be non-negative numbers")
        if kind == "numeric":
            edges = spec.get("edges")
            if not isinstance(edges, list) or len(edges) < 2:
                raise ValueError(f"reference: feature {name!r}: 'edges' needs >= 2 numbers")
            e = np.asarray(edges, dtype=np.float64)
            if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
                raise ValueError(
                    f"reference: feature {name!r}: 'edges' must be finite and increasing"
                )
            if len(counts) != len(edges) + 1:
                raise ValueError(
                    f"reference: feature {name!r}: 'counts' needs len(edges)+1 = "
                    f"{len(edges) + 1} entries (tails included), got {len(counts)}"
                )
        elif kind == "categorical":
            cats = spec.get("categories")
            if not isinstance(cats, list) or not cats or len(cats) > MAX_CATEGORIES:
                raise ValueError(
                    f"reference: feature {name!r}: 'categories' needs 1..{MAX_CATEGORIES} values"
                )
            if len(counts) != len(cats) + 1:
                raise ValueError(
                    f"reference: feature {name!r}: 'counts' needs len(categories)+1 = "
                    f"{len(cats) + 1} entries ('other' last), got {len(counts)}"
                )
        else:
            raise ValueError(
                f"reference: feature {name!r}: kind must be 'numeric' or 'categorical'"
            )
