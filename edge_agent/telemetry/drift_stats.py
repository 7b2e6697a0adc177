"""Windowed drift statistics on the gateway: what the control plane needs, never raw data.

For every registered model version, each window (default one hour) accumulates, per input
feature and for the prediction: row counts, missing (NaN) and invalid (+-inf) counts,
fixed-bin histograms over the bundle reference's edges (farmiq.drift_reference), sum,
sum of squares, min and max, and a KLL quantile sketch of every numeric column
(farmiq/quantile_sketch.py: mergeable, a few KB, no row of the farm's data). Only where a
farm opted in (``drift.reservoir_size > 0``) a window also carries a bounded, seeded
reservoir sample of whole rows (Algorithm R); the control plane's Evidently drill-downs
use it when present and the sketches otherwise.

``observe`` sits on the inference path, so it is a handful of vectorised numpy calls per
batch whatever the feature count: every numeric feature is binned at once against a
padded edge matrix, every categorical one against a padded category matrix, and one
``bincount`` over flat (feature offset + bin) indices updates all histograms.

Light on purpose: numpy only (no scipy, no pandas).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from farmiq.cbpe import Calibration, top_confidence
from farmiq.drift_reference import PREDICTION, schema_hash, validate_reference
from farmiq.quantile_sketch import DEFAULT_K, ColumnSketches
from farmiq.quantile_sketch import merge_encoded as merge_sketches
from farmiq.wire.drift_layout import ColumnLayout

WINDOW_FORMAT = "farmiq-drift-window/1"
WINDOW_TYPE = "drift_window"


def window_id(device_id: str, model: str, version: str, start: float) -> str:
    """Deterministic: a redelivered window carries the same id and is stored once."""
    return f"{device_id}/{model}/{version}/{round(start * 1000)}"


@dataclass(frozen=True)
class _Layout:
    names: list[str]  # features then (optionally) the prediction column
    kinds: list[str]
    slots: np.ndarray  # histogram slots per column
    offsets: np.ndarray  # flat offset of each column's histogram
    total: int
    num_idx: np.ndarray  # column indices of numeric columns
    num_edges: np.ndarray  # [n_num, max_edges], padded with +inf
    num_last: np.ndarray  # last edge per numeric column
    cat_idx: np.ndarray
    cat_values: np.ndarray  # [n_cat, max_cats], padded with NaN
    cat_n: np.ndarray  # number of categories per categorical column ("other" slot index)
    n_features: int
    has_prediction: bool
    pred_kind: str | None

    @classmethod
    def from_reference(cls, ref: Mapping[str, Any]) -> _Layout:
        cols = ColumnLayout.from_reference(ref)  # the one reading of the layout (farmiq.wire)
        specs = list(zip(cols.names, cols.specs, strict=True))
        has_pred = cols.has_prediction
        names, kinds, slots, offsets = cols.names, cols.kinds, cols.slots, cols.offsets
        num = [i for i, k in enumerate(kinds) if k == "numeric"]
        cat = [i for i, k in enumerate(kinds) if k == "categorical"]
        max_e = max((len(specs[i][1]["edges"]) for i in num), default=1)
        num_edges = np.full((len(num), max_e), np.inf)
        num_last = np.zeros(len(num))
        for r, i in enumerate(num):
            e = np.asarray(specs[i][1]["edges"], dtype=np.float64)
            num_edges[r, : e.size] = e
            num_last[r] = e[-1]
        max_c = max((len(specs[i][1]["categories"]) for i in cat), default=1)
        cat_values = np.full((len(cat), max_c), np.nan)
        cat_n = np.zeros(len(cat), dtype=np.int64)
        for r, i in enumerate(cat):
            try:
                c = np.asarray(specs[i][1]["categories"], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"feature {names[i]!r}: the gateway bins numeric category codes only"
                ) from exc
            cat_values[r, : c.size] = c
            cat_n[r] = c.size
        return cls(
            names=names,
            kinds=kinds,
            slots=slots,
            offsets=offsets,
            total=cols.total,
            num_idx=np.array(num, dtype=np.int64),
            num_edges=num_edges,
            num_last=num_last,
            cat_idx=np.array(cat, dtype=np.int64),
            cat_values=cat_values,
            cat_n=cat_n,
            n_features=cols.n_features,
            has_prediction=has_pred,
            pred_kind=cols.kinds[-1] if has_pred else None,
        )


class _Window:
    """The running statistics of one model version over one window."""

    def __init__(
        self,
        layout: _Layout,
        start: float,
        reservoir_size: int,
        rng: np.random.Generator,
        sketch_k: int = DEFAULT_K,
    ):
        c = len(layout.names)
        self.layout = layout
        self.start = start
        self.n = 0
        self.counts = np.zeros(layout.total + 1, dtype=np.int64)  # last slot: sink for non-finite
        self.missing = np.zeros(c, dtype=np.int64)
        self.invalid = np.zeros(c, dtype=np.int64)
        self.sum = np.zeros(c)
        self.sumsq = np.zeros(c)
        self.min = np.full(c, np.inf)
        self.max = np.full(c, -np.inf)
        self.k = reservoir_size
        self.reservoir = np.empty((reservoir_size, c))
        self.rng = rng
        self.sketches = ColumnSketches(int(layout.num_idx.size), sketch_k)
        # Small batches are staged and binned BUFFER rows at a time: a single-row observe
        # then costs one row copy instead of two dozen numpy calls.
        self.buf = np.empty((self.BUFFER, c))
        self.buffered = 0
        # The label-free estimate (farmiq/cbpe.py): sums of the calibrated P(correct) of
        # each answer and of its Bernoulli variance, over the rows that had probabilities.
        self.est_rows = 0
        self.est_sum = 0.0
        self.est_var = 0.0

    def estimate(self, p_correct: np.ndarray) -> None:
        self.est_rows += int(p_correct.shape[0])
        self.est_sum += float(p_correct.sum())
        self.est_var += float((p_correct * (1.0 - p_correct)).sum())

    BUFFER = 256  # add() costs ~20 numpy calls whatever the rows: 256 makes it ~0.3 us/row

    def push(self, x: np.ndarray, pred: np.ndarray | None) -> None:
        n, f = x.shape
        if n >= self.BUFFER:
            self.flush()
            if pred is not None:
                x = np.concatenate([x, pred[:, None]], axis=1)
            self.add(x)
            return
        if self.buffered + n > self.BUFFER:
            self.flush()
        b = self.buffered
        self.buf[b : b + n, :f] = x
        if pred is not None:
            self.buf[b : b + n, f] = pred
        self.buffered = b + n

    def flush(self) -> None:
        if self.buffered:
            n, self.buffered = self.buffered, 0
            self.add(self.buf[:n])

    def add(self, x: np.ndarray) -> None:
        lay = self.layout
        n = x.shape[0]
        if n == 0:
            return
        nan = np.isnan(x)
        finite = np.isfinite(x)
        self.missing += nan.sum(axis=0)
        self.invalid += (~finite & ~nan).sum(axis=0)
        bins = np.empty(x.shape, dtype=np.int64)
        if lay.num_idx.size:
            xn = x[:, lay.num_idx]
            b = (xn[:, :, None] >= lay.num_edges[None, :, :]).sum(axis=2)
            b -= xn == lay.num_last  # numpy.histogram: the last interior bin is closed
            bins[:, lay.num_idx] = b
        if lay.cat_idx.size:
            xc = x[:, lay.cat_idx]
            eq = xc[:, :, None] == lay.cat_values[None, :, :]
            bins[:, lay.cat_idx] = np.where(eq.any(axis=2), eq.argmax(axis=2), lay.cat_n)
        flat = np.where(finite, bins + lay.offsets, lay.total)
        self.counts += np.bincount(flat.ravel(), minlength=lay.total + 1)
        xf = np.where(finite, x, 0.0)
        self.sum += xf.sum(axis=0)
        self.sumsq += (xf * xf).sum(axis=0)
        self.min = np.minimum(self.min, np.where(finite, x, np.inf).min(axis=0))
        self.max = np.maximum(self.max, np.where(finite, x, -np.inf).max(axis=0))
        if lay.num_idx.size:
            self.sketches.update(x[:, lay.num_idx])
        self._sample(x)
        self.n += n

    def _sample(self, x: np.ndarray) -> None:
        """Algorithm R, vectorised over the batch."""
        k, seen, n = self.k, self.n, x.shape[0]
        if k == 0:
            return
        fill = max(0, min(n, k - seen))
        if fill:
            self.reservoir[seen : seen + fill] = x[:fill]
        if fill == n:
            return
        t = np.arange(seen + fill, seen + n)  # global 0-based index of each remaining row
        j = self.rng.integers(0, t + 1)  # keep row t with probability k / (t + 1)
        keep = j < k
        if keep.any():
            rows = np.nonzero(keep)[0] + fill
            slots = j[keep]
            # Several rows may land on one slot: the later row wins, as in the serial loop.
            last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
            self.reservoir[slots[last]] = x[rows[last]]

    def to_dict(
        self,
        device_id: str,
        model: str,
        version: str,
        schema: str,
        schema_version: str,
        end: float,
        farm_id: str | None,
    ) -> dict[str, Any]:
        self.flush()
        lay = self.layout
        kll = dict(zip(lay.num_idx.tolist(), self.sketches.encoded(), strict=True))
        cols: dict[str, Any] = {}
        for i, name in enumerate(lay.names):
            o, s = lay.offsets[i], lay.slots[i]
            col: dict[str, Any] = {
                "kind": lay.kinds[i],
                "counts": self.counts[o : o + s].tolist(),
                "missing": int(self.missing[i]),
                "invalid": int(self.invalid[i]),
            }
            if lay.kinds[i] == "numeric":
                col.update(
                    sum=float(self.sum[i]),
                    sumsq=float(self.sumsq[i]),
                    min=_f(self.min[i]),
                    max=_f(self.max[i]),
                )
                if kll.get(i) is not None:
                    col["kll"] = kll[i]
            cols[name] = col
        pred = cols.pop(PREDICTION, None)
        out: dict[str, Any] = {
            "type": WINDOW_TYPE,
            "format": WINDOW_FORMAT,
            "id": window_id(device_id, model, version, self.start),
            "device_id": device_id,
            "farm_id": farm_id,
            "model": model,
            "version": version,
            "schema": schema,
            "schema_version": schema_version,
            "start": self.start,
            "end": end,
            "n": self.n,
            "features": cols,
            "prediction": pred,
            "expected_accuracy": (
                {"rows": self.est_rows, "sum": self.est_sum, "var": self.est_var}
                if self.est_rows
                else None
            ),
        }
        if self.k:  # raw rows: only where the farm opted in
            held = min(self.n, self.k)
            # 7 significant digits (float32 precision, more than any farm sensor has) keep
            # the JSON about half the size of full float64 reprs.
            rows = [[_short(v) for v in row] for row in self.reservoir[:held].tolist()]
            out["reservoir"] = {"columns": list(lay.names), "rows": rows, "seen": self.n}
        return out


def _short(v: float) -> float | None:
    return float(f"{v:.7g}") if math.isfinite(v) else None


def _f(v: float) -> float | None:
    """JSON has no NaN/inf: empty statistics become null."""
    return v if math.isfinite(v) else None


@dataclass
class _Model:
    layout: _Layout
    schema: str
    schema_version: str
    calibration: Calibration | None = None
    window: _Window | None = None


class DriftStats:
    """Per model version drift windows for one gateway.

    Call ``register`` when a bundle is installed, ``observe`` after every inference and
    ``collect`` periodically (and ``close_window`` at shutdown); hand the returned window
    dicts to the outbox (``encode_window``).
    """

    def __init__(
        self,
        device_id: str,
        *,
        window_s: float = 3600.0,
        reservoir_size: int = 0,
        sketch_k: int = DEFAULT_K,
        seed: int = 0,
        farm_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if reservoir_size < 0:
            raise ValueError("reservoir_size must be >= 0")
        self.device_id = device_id
        self.farm_id = farm_id
        self.window_s = float(window_s)
        self.reservoir_size = reservoir_size
        self.sketch_k = sketch_k
        self._seed = seed
        self._clock = clock
        self._models: dict[tuple[str, str], _Model] = {}
        self._closed: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # observe may run in an executor thread
        self.ignored_rows = 0

    def register(
        self,
        model: str,
        version: str,
        reference: Mapping[str, Any],
        schema_version: str = "",
        calibration: Calibration | None = None,
    ) -> None:
        """Start accumulating for a model version, binned by its bundle's reference;
        with its ``calibration``, each window also carries the label-free expected
        accuracy (fed by ``observe(..., probabilities=...)``)."""
        validate_reference(reference)
        layout = _Layout.from_reference(reference)
        with self._lock:
            old = self._models.get((model, version))
            if old is not None and old.window is not None and (old.window.n or old.window.buffered):
                self._closed.append(self._finish(model, version, old, self._clock()))
            self._models[(model, version)] = _Model(
                layout, schema_hash(reference), schema_version, calibration
            )

    def unregister(self, model: str, version: str) -> list[dict[str, Any]]:
        """Stop tracking a version (e.g. after a rollback); returns its last partial window."""
        with self._lock:
            m = self._models.pop((model, version), None)
            if m is None or m.window is None or not (m.window.n or m.window.buffered):
                return []
            return [self._finish(model, version, m, self._clock())]

    def models(self) -> list[tuple[str, str]]:
        return list(self._models)

    def _window_start(self, now: float) -> float:
        return math.floor(now / self.window_s) * self.window_s

    def _finish(self, model: str, version: str, m: _Model, end: float) -> dict[str, Any]:
        assert m.window is not None
        w = m.window.to_dict(
            self.device_id, model, version, m.schema, m.schema_version, end, self.farm_id
        )
        m.window = None
        return w

    def observe(
        self,
        model: str,
        version: str,
        inputs: np.ndarray,
        outputs: np.ndarray | None = None,
        now: float | None = None,
        probabilities: np.ndarray | None = None,
    ) -> bool:
        """Add a batch of inference inputs ``[n, n_features]`` and outputs to the window.

        The prediction column is ``outputs`` when 1-D or ``[n, 1]``, and the arg-max class
        when ``[n, k>1]`` with a categorical prediction (``[n, k]`` numeric: column 0).
        Returns False (and counts the rows) for a model version that is not registered.
        """
        m = self._models.get((model, version))
        x = np.asarray(inputs, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if m is None:
            self.ignored_rows += x.shape[0]
            return False
        lay = m.layout
        if x.ndim != 2 or x.shape[1] != lay.n_features:
            raise ValueError(
                f"{model}:{version}: inputs must be [n, {lay.n_features}], got {list(x.shape)}"
            )
        pred = self._prediction_column(lay, outputs, x.shape[0]) if lay.has_prediction else None
        p_correct = None
        if m.calibration is not None and probabilities is not None:
            try:
                p_correct = m.calibration.apply(top_confidence(probabilities))
            except ValueError:  # no usable probabilities (NaN, wrong shape): no estimate
                p_correct = None
            if p_correct is not None and p_correct.shape[0] != x.shape[0]:
                p_correct = None
        t = self._clock() if now is None else now
        with self._lock:
            w = m.window
            if w is not None and t >= self._window_start(w.start) + self.window_s:
                self._closed.append(
                    self._finish(model, version, m, self._window_start(w.start) + self.window_s)
                )
                w = None
            if w is None:
                # Start at the first observation (not the hour boundary) so a window opened
                # after an agent restart gets a new id instead of colliding with the one
                # flushed before it.
                rng = np.random.default_rng([self._seed, int(t * 1000) & 0xFFFFFFFF])
                w = m.window = _Window(lay, t, self.reservoir_size, rng, self.sketch_k)
            w.push(x, pred)
            if p_correct is not None:
                w.estimate(p_correct)
        return True

    @staticmethod
    def _prediction_column(lay: _Layout, outputs: np.ndarray | None, n: int) -> np.ndarray:
        if outputs is None:
            return np.full(n, np.nan)
        y = np.asarray(outputs, dtype=np.float64)
        if y.ndim == 1:
            col = y
        elif y.ndim == 2 and y.shape[1] == 1:
            col = y[:, 0]
        elif y.ndim == 2 and lay.pred_kind == "categorical":
            col = y.argmax(axis=1).astype(np.float64)
        elif y.ndim == 2:
            col = y[:, 0]
        else:
            raise ValueError(f"outputs must be [n] or [n, k], got {list(y.shape)}")
        if col.shape[0] != n:
            raise ValueError(f"outputs have {col.shape[0]} rows for {n} inputs")
        return col

    def collect(self, now: float | None = None) -> list[dict[str, Any]]:
        """Windows that have ended (by time) since the last call, ready to publish."""
        t = self._clock() if now is None else now
        with self._lock:
            for (model, version), m in self._models.items():
                w = m.window
                if w is not None and t >= self._window_start(w.start) + self.window_s:
                    self._closed.append(
                        self._finish(model, version, m, self._window_start(w.start) + self.window_s)
                    )
            out, self._closed = self._closed, []
        return out

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """The open windows as they stand (end = now), left open: the checkpoint's view."""
        t = self._clock() if now is None else now
        with self._lock:
            return [
                m.window.to_dict(
                    self.device_id, mname, ver, m.schema, m.schema_version, t, self.farm_id
                )
                for (mname, ver), m in self._models.items()
                if m.window is not None and (m.window.n or m.window.buffered)
            ]

    def close_window(
        self, model: str | None = None, version: str | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        """Close the running windows now (all, or one model / version), e.g. at shutdown."""
        t = self._clock() if now is None else now
        with self._lock:
            for (mname, ver), m in self._models.items():
                wanted = (model is None or mname == model) and (version is None or ver == version)
                if wanted and m.window is not None and (m.window.n or m.window.buffered):
                    self._closed.append(self._finish(mname, ver, m, t))
            out, self._closed = self._closed, []
        return out


def encode_window(window: Mapping[str, Any]) -> bytes:
    return json.dumps(window, separators=(",", ":"), allow_nan=False).encode()


def merge_encoded(a: bytes, b: bytes) -> tuple[str, bytes]:
    """The outbox's merge function for two encoded windows: (key, payload) of the merged."""
    merged = merge_windows(json.loads(a), json.loads(b))
    return str(merged["id"]), encode_window(merged)


def window_item(window: Mapping[str, Any]) -> tuple[bytes, str, str]:
    """A window as an outbox item: (payload, key, merge group)."""
    return encode_window(window), str(window["id"]), merge_key(window)


def merge_key(window: Mapping[str, Any]) -> str:
    """Windows with the same key can be merged (same model, version and binning)."""
    return f"{window['model']}|{window['version']}|{window['schema']}"


def merge_windows(a: Mapping[str, Any], b: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """One window covering both: histograms and counts summed, sketches merged, the
    reservoir (where there is one) kept bounded.

    The merged reservoir is still a uniform sample of all rows seen: the number drawn from
    ``a`` follows the hypergeometric law of sampling ``k`` rows out of ``n_a + n_b``.
    """
    if merge_key(a) != merge_key(b) or a["device_id"] != b["device_id"]:
        raise ValueError("only windows of the same device, model, version and schema merge")
    first = a if a["start"] <= b["start"] else b
    out: dict[str, Any] = dict(first)
    out["start"] = first["start"]
    out["end"] = max(a["end"], b["end"])
    out["n"] = a["n"] + b["n"]
    parts = sorted(set(a.get("parts", [a["id"]])) | set(b.get("parts", [b["id"]])))
    out["parts"] = parts
    out["id"] = "merged/" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
    out["features"] = {k: _merge_col(a["features"][k], b["features"][k]) for k in a["features"]}
    if a.get("prediction") is not None and b.get("prediction") is not None:
        out["prediction"] = _merge_col(a["prediction"], b["prediction"])
    ea, eb = a.get("expected_accuracy"), b.get("expected_accuracy")
    if ea and eb:
        out["expected_accuracy"] = {k: ea[k] + eb[k] for k in ("rows", "sum", "var")}
    else:
        out["expected_accuracy"] = ea or eb
    ra, rb = a.get("reservoir"), b.get("reservoir")
    if ra is None or rb is None:
        out.pop("reservoir", None)
        if ra or rb:
            out["reservoir"] = ra or rb  # a window from before an opt-in change: kept as is
        return out
    k = max(len(ra["rows"]), len(rb["rows"]), 1)
    na, nb = ra["seen"], rb["seen"]
    rng = np.random.default_rng([seed, na, nb])
    if na + nb <= k:
        rows = ra["rows"] + rb["rows"]
    else:
        m = int(rng.hypergeometric(na, nb, k)) if na and nb else (k if na else 0)
        m = min(m, len(ra["rows"]))
        take_a = rng.choice(len(ra["rows"]), size=m, replace=False)
        take_b = rng.choice(len(rb["rows"]), size=min(k - m, len(rb["rows"])), replace=False)
        rows = [ra["rows"][i] for i in take_a] + [rb["rows"][i] for i in take_b]
    out["reservoir"] = {"columns": ra["columns"], "rows": rows, "seen": na + nb}
    return out


def _merge_col(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    if len(a["counts"]) != len(b["counts"]):
        raise ValueError("histograms with different bins cannot merge")
    out = dict(a)
    out["counts"] = [x + y for x, y in zip(a["counts"], b["counts"], strict=True)]
    out["missing"] = a["missing"] + b["missing"]
    out["invalid"] = a["invalid"] + b["invalid"]
    if a["kind"] == "numeric":
        out["sum"] = a["sum"] + b["sum"]
        out["sumsq"] = a["sumsq"] + b["sumsq"]
        mins = [v for v in (a["min"], b["min"]) if v is not None]
        maxs = [v for v in (a["max"], b["max"]) if v is not None]
        out["min"] = min(mins) if mins else None
        out["max"] = max(maxs) if maxs else None
        kll = merge_sketches(a.get("kll"), b.get("kll"))
        if kll is not None:
            out["kll"] = kll
    return out
