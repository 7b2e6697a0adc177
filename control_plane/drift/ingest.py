"""Window ingestion and aggregation: the control plane's side of the drift pipeline.

``DriftService.ingest_window(device_id, payload)`` is what the MQTT subscriber calls for
every message on ``farmiq/v1/gw/{id}/up/drift``. It stores each window once by its id
(redelivery after a lost acknowledgement is a no-op), and returns the keys to acknowledge
on ``farmiq/v1/gw/{id}/down/ack``: stored, duplicate, and permanently unusable items alike,
so a gateway never resends something that can never be accepted. Concept-drift state
changes (``"type": "concept_drift"``) arrive on the same topic.

``aggregate`` sums a model's windows per device (then per farm or for the fleet) straight
from the stored flat arrays, and ``analyze`` runs every statistic over all groups at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from control_plane.drift.analysis import Analysis, Groups, RefLayout, analyze
from control_plane.drift.tables import (
    ConceptEvent,
    DriftReference,
    DriftWindow,
    IngestReject,
    RetrainingDecisionRecord,
    RetrainingPolicyState,
)
from control_plane.drift.thresholds import ThresholdConfig
from farmiq import quantile_sketch, topics
from farmiq.drift_reference import PREDICTION, schema_hash, validate_reference
from farmiq.wire.drift_layout import ColumnLayout
from farmiq.wire.messages import ConceptEvent as WireConceptEvent
from farmiq.wire.messages import DriftWindow as WireWindow

log = logging.getLogger(__name__)

LEVELS = ("device", "farm", "fleet")
DEFAULT_PERIOD_S = 24 * 3600.0


class WindowError(ValueError):
    """A payload that can never be stored (malformed, or speaking for another device)."""


@dataclass
class IngestResult:
    device_id: str
    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    rejected: list[tuple[str | None, str]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)  # of the windows stored

    @property
    def ack_keys(self) -> list[str]:
        return self.stored + self.duplicates + [k for k, _ in self.rejected if k]

    @property
    def ack_topic(self) -> str:
        return topics.down(self.device_id, topics.OUTBOX_ACK)

    @property
    def ack_payload(self) -> bytes:
        return orjson.dumps({"keys": self.ack_keys})


def _arr(values: Sequence[Any], dtype: Any, where: str) -> bytes:
    try:
        a = np.asarray([np.nan if v is None else v for v in values], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise WindowError(f"{where}: not numbers") from exc
    return a.astype(a.dtype.newbyteorder("<")).tobytes()


def _window_row(device_id: str, w: Mapping[str, Any], raw: bytes, now: float) -> dict[str, Any]:
    # The window's shape is farmiq.wire.DriftWindow, the model the gateway's windows follow.
    try:
        win = WireWindow.model_validate(w)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WindowError(f"malformed window: {where}: {first['msg']}") from None
    cols = list(win.features.values()) + ([win.prediction] if win.prediction else [])
    counts: list[int] = []
    for col in cols:
        counts += col.counts
    flat = np.asarray(counts, dtype=np.int64)
    if flat.size and flat.min() < 0:
        raise WindowError("counts must be non-negative integers")
    named: list[tuple[str, Any]] = [*win.features.items(), (PREDICTION, win.prediction)]
    for name, col in named:
        if col is not None and col.kll is not None:
            try:  # checked now, so a drill-down never meets a sketch it cannot read
                quantile_sketch.check_encoded(col.kll, header_only=True)
            except quantile_sketch.SketchError as exc:
                raise WindowError(f"{name}: {exc}") from None
    if win.end < win.start:
        raise WindowError("window ends before it starts")
    est = win.expected_accuracy
    return {
        "id": win.id,
        "device_id": device_id,
        "farm_id": win.farm_id,
        "model": win.model,
        "version": win.version,
        "schema": win.schema_,
        "start": win.start,
        "end": win.end,
        "n": win.n,
        "counts": flat.astype("<i8").tobytes(),
        "missing": _arr([c.missing for c in cols], "<i8", "missing"),
        "invalid": _arr([c.invalid for c in cols], "<i8", "invalid"),
        "mins": _arr([c.min for c in cols], "<f8", "min"),
        "maxs": _arr([c.max for c in cols], "<f8", "max"),
        # As received: the reservoir is read from it on a drill-down, and not
        # re-serialising it halves the ingest cost of a fleet burst.
        "payload": raw,
        "received": now,
        "est_rows": est.rows if est else None,
        "est_sum": est.sum if est else None,
        "est_var": est.var if est else None,
    }


class DriftService:
    def __init__(
        self,
        engine: Engine,
        thresholds: ThresholdConfig | None = None,
        *,
        farm_of: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        raw_rows_farms: Iterable[str] = (),
    ) -> None:
        self.engine = engine
        # Farms that opted in to raw sample rows (site config ``raw_rows_farms``): from any
        # other farm a window's raw rows are dropped before it is stored (its statistics
        # and sketches are kept), whatever the gateway was configured to send.
        self.raw_rows_farms = frozenset(raw_rows_farms)
        self.raw_rows_dropped = 0
        self.thresholds = thresholds or ThresholdConfig()
        self.farm_of = farm_of
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._layouts: dict[tuple[str, str], tuple[RefLayout, dict[str, Any], str]] = {}

    def create_tables(self) -> None:
        from control_plane.db import Base

        tables = (
            DriftReference,
            DriftWindow,
            ConceptEvent,
            IngestReject,
            RetrainingDecisionRecord,
            RetrainingPolicyState,
        )
        Base.metadata.create_all(
            self.engine, tables=[Base.metadata.tables[t.__tablename__] for t in tables]
        )

    def session(self) -> Session:
        return self._sessions()

    # -- references ---------------------------------------------------------------------------
    def set_reference(self, model: str, reference: Mapping[str, Any], version: str = "*") -> str:
        """Store the baseline for a model version ("*": every version without its own)."""
        validate_reference(reference)
        sh = schema_hash(reference)
        with self.session() as s, s.begin():
            s.merge(
                DriftReference(
                    model=model,
                    version=version,
                    schema=sh,
                    reference=dict(reference),
                    created=self.clock(),
                )
            )
        self._layouts.pop((model, version), None)
        return sh

    def reference(
        self, model: str, version: str | None = None
    ) -> tuple[RefLayout, dict[str, Any], str, str]:
        """(layout, reference, schema hash, version it is stored under); KeyError if none."""
        with self.session() as s:
            rec = None
            if version is not None:
                rec = s.get(DriftReference, (model, version))
            if rec is None:
                rec = s.get(DriftReference, (model, "*"))
            if rec is None and version is None:
                rec = s.scalars(
                    select(DriftReference)
                    .where(DriftReference.model == model)
                    .order_by(DriftReference.created.desc())
                ).first()
            if rec is None:
                raise KeyError(f"no drift reference for model {model!r}")
            key = (rec.model, rec.version)
            cached = self._layouts.get(key)
            if cached is None or cached[2] != rec.schema:
                cached = (RefLayout.from_reference(rec.reference), rec.reference, rec.schema)
                self._layouts[key] = cached
            return cached[0], cached[1], cached[2], rec.version

    def models(self) -> list[str]:
        with self.session() as s:
            refs = set(s.scalars(select(DriftReference.model).distinct()))
            seen = set(s.scalars(select(DriftWindow.model).distinct()))
        return sorted(refs | seen)

    # -- ingestion ----------------------------------------------------------------------------
    def ingest_window(self, device_id: str, payload: bytes) -> IngestResult:
        """Store one message from ``up/drift``; never raises on bad input."""
        return self.ingest_many([(device_id, payload)])[0]

    def ingest_many(self, items: Iterable[tuple[str, bytes]]) -> list[IngestResult]:
        """Store a batch of messages in one transaction (a burst after an outage)."""
        now = self.clock()
        results: list[IngestResult] = []
        rows: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        owner: dict[str, IngestResult] = {}
        for device_id, payload in items:
            res = IngestResult(device_id)
            results.append(res)
            key: str | None = None
            try:
                topics.check_device_id(device_id)
                doc = orjson.loads(payload)
                if not isinstance(doc, dict):
                    raise WindowError("payload must be a JSON object")
                key = doc.get("id") or doc.get("key")
                key = key if isinstance(key, str) else None
                if doc.get("device_id") != device_id:
                    raise WindowError(
                        f"device_id {doc.get('device_id')!r} is not the topic's {device_id!r}"
                    )
                if doc.get("type") == "concept_drift":
                    ev = _concept_row(device_id, doc)
                    key = ev["key"]
                    events.append(ev)
                else:
                    row = _window_row(device_id, doc, payload, now)
                    if self.farm_of is not None:
                        row["farm_id"] = self.farm_of(device_id) or row["farm_id"]
                    if "reservoir" in doc and row["farm_id"] not in self.raw_rows_farms:
                        doc.pop("reservoir")
                        row["payload"] = orjson.dumps(doc)
                        self.raw_rows_dropped += 1
                        log.info(
                            "drift window from %s: raw rows dropped (farm %s did not opt in)",
                            device_id, row["farm_id"],
                        )  # fmt: skip
                    rows.append(row)
                owner[key] = res  # type: ignore[index]
            except (WindowError, orjson.JSONDecodeError, ValueError) as exc:
                reason = str(exc)
                log.warning("drift ingest from %s rejected: %s", device_id, reason)
                res.rejected.append((key, reason))
                rejects.append({"device_id": device_id, "key": key, "reason": reason, "at": now})
        with self.session() as s, s.begin():
            for table, batch, pk in ((DriftWindow, rows, "id"), (ConceptEvent, events, "key")):
                if not batch:
                    continue
                keys = [r[pk] for r in batch]
                col = getattr(table, pk)
                existing: set[str] = set()
                for i in range(0, len(keys), 500):
                    existing |= set(s.scalars(select(col).where(col.in_(keys[i : i + 500]))))
                fresh, seen = [], set()
                for r in batch:
                    k = r[pk]
                    if k in existing or k in seen:
                        owner[k].duplicates.append(k)
                    else:
                        seen.add(k)
                        fresh.append(r)
                        owner[k].stored.append(k)
                        if table is DriftWindow:
                            owner[k].models.add(r["model"])
                if fresh:
                    s.execute(_insert_ignore(self.engine, table), fresh)
            if rejects:
                s.execute(IngestReject.__table__.insert(), rejects)  # type: ignore[attr-defined]
        return results

    # -- aggregation --------------------------------------------------------------------------
    def aggregate(
        self,
        model: str,
        *,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
        device_ids: Sequence[str] | None = None,
    ) -> tuple[RefLayout, Groups, dict[str, Any]]:
        """Per-device sums of every window of ``model`` whose binning matches the reference
        and which ends in (since, until]."""
        layout, _, sh, ref_version = self.reference(model, version)
        until = self.clock() if until is None else until
        since = until - DEFAULT_PERIOD_S if since is None else since
        q = select(
            DriftWindow.device_id,
            DriftWindow.farm_id,
            DriftWindow.n,
            DriftWindow.counts,
            DriftWindow.missing,
            DriftWindow.invalid,
            DriftWindow.mins,
            DriftWindow.maxs,
            DriftWindow.schema,
            DriftWindow.start,
            DriftWindow.end,
        ).where(DriftWindow.model == model, DriftWindow.end > since, DriftWindow.end <= until)
        if version is not None:
            q = q.where(DriftWindow.version == version)
        elif ref_version != "*":
            q = q.where(DriftWindow.version == ref_version)
        if device_ids:
            q = q.where(DriftWindow.device_id.in_(list(device_ids)))
        with self.session() as s:
            rows = s.execute(q).all()
        c = len(layout.names)
        good = [r for r in rows if r.schema == sh and len(r.counts) == 8 * layout.total]
        meta = {
            "model": model,
            "version": version or ref_version,
            "since": since,
            "until": until,
            "schema": sh,
            "windows": len(good),
            "schema_mismatch": len(rows) - len(good),
            "start": min((r.start for r in good), default=None),
            "end": max((r.end for r in good), default=None),
        }
        devs = [r.device_id for r in good]
        if not good:
            empty = Groups(
                [],
                np.zeros((0, layout.total + 1)),
                np.zeros((0, c)),
                np.zeros((0, c)),
                np.zeros((0, c)),
                np.zeros((0, c)),
                np.zeros(0),
                np.zeros(0),
            )
            return layout, empty, meta
        counts = np.frombuffer(b"".join(r.counts for r in good), dtype="<i8").reshape(len(good), -1)
        counts = np.concatenate([counts, np.zeros((len(good), 1), dtype=np.int64)], axis=1)

        def stack(attr: str, dtype: str) -> np.ndarray:
            return np.frombuffer(b"".join(getattr(r, attr) for r in good), dtype=dtype).reshape(
                len(good), c
            )

        per_window = Groups(
            devs,
            counts,
            stack("missing", "<i8"),
            stack("invalid", "<i8"),
            stack("mins", "<f8"),
            stack("maxs", "<f8"),
            np.array([r.n for r in good], dtype=np.int64),
            np.ones(len(good), dtype=np.int64),
        )
        groups = per_window.regroup(devs)
        farm = {r.device_id: (r.farm_id or "unassigned") for r in good}
        meta["farms"] = farm
        return layout, groups, meta

    def analyze(
        self,
        model: str,
        *,
        level: str = "fleet",
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
        device_ids: Sequence[str] | None = None,
    ) -> tuple[Analysis, dict[str, Any]]:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        layout, groups, meta = self.aggregate(
            model, version=version, since=since, until=until, device_ids=device_ids
        )
        if level == "farm":
            groups = groups.regroup([meta["farms"][d] for d in groups.labels])
        elif level == "fleet" and groups.labels:
            groups = groups.regroup(["fleet"] * len(groups.labels))
        th = self.thresholds.for_model(model)
        return analyze(layout, groups, th, level), meta

    # -- concept drift and samples --------------------------------------------------------------
    def concept_events(
        self, model: str, since: float, until: float | None = None
    ) -> list[ConceptEvent]:
        until = self.clock() if until is None else until
        with self.session() as s:
            return list(
                s.scalars(
                    select(ConceptEvent)
                    .where(
                        ConceptEvent.model == model,
                        ConceptEvent.at > since,
                        ConceptEvent.at <= until,
                    )
                    .order_by(ConceptEvent.at)
                )
            )

    def expected_accuracy(
        self,
        model: str,
        *,
        version: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, Any]:
        """The label-free expected accuracy (farmiq/cbpe.py) over (since, until]: for
        the fleet, per gateway and per window, from the windows' calibrated confidences.
        No labels needed: a barn with none still shows its model getting worse."""
        until = self.clock() if until is None else until
        since = until - DEFAULT_PERIOD_S if since is None else since
        q = (
            select(
                DriftWindow.device_id, DriftWindow.version, DriftWindow.start, DriftWindow.end,
                DriftWindow.est_rows, DriftWindow.est_sum, DriftWindow.est_var,
            )
            .where(
                DriftWindow.model == model, DriftWindow.end > since, DriftWindow.end <= until,
                DriftWindow.est_rows.is_not(None),
            )
            .order_by(DriftWindow.end)
        )  # fmt: skip
        if version is not None:
            q = q.where(DriftWindow.version == version)
        fleet = _Sums()
        devices: dict[str, _Sums] = {}
        windows = []
        with self.session() as s:
            for dev, ver, start, end, rows, total, var in s.execute(q):
                one = _Sums(int(rows or 0), float(total or 0.0), float(var or 0.0))
                fleet.add(one)
                devices.setdefault(dev, _Sums()).add(one)
                windows.append(
                    {"device_id": dev, "version": ver, "start": start, "end": end,
                     **one.estimate()}
                )  # fmt: skip
        return {
            "model": model,
            "version": version,
            "since": since,
            "until": until,
            "fleet": fleet.estimate(),
            "devices": {d: acc.estimate() for d, acc in sorted(devices.items())},
            "windows": windows,
        }

    def gateway_rows(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        device_id: str | None = None,
        limit: int = 5000,
    ) -> tuple[list[str], list[list[Any]], str]:
        """Rows standing for what gateways saw in the period, for Evidently drill-downs:
        (columns, rows, source). ``source`` is ``"raw sample"`` when the windows carry raw
        rows (farms that opted in; newest first, up to ``limit``), else ``"sketches"``:
        ``limit`` rows rebuilt from the windows' merged KLL sketches (numeric columns) and
        summed histograms (categorical), each column drawn apart. Evidently's column
        tests are per column, so they judge these as they judge the raw rows
        (tests/drift/test_quantile_sketch.py checks the verdicts agree)."""
        _, ref, sh, _ = self.reference(model)
        until = self.clock() if until is None else until
        since = until - DEFAULT_PERIOD_S if since is None else since
        q = (
            select(DriftWindow.payload)
            .where(
                DriftWindow.model == model,
                DriftWindow.schema == sh,
                DriftWindow.end > since,
                DriftWindow.end <= until,
            )
            .order_by(DriftWindow.end.desc())
        )
        if device_id:
            q = q.where(DriftWindow.device_id == device_id)
        columns: list[str] = []
        raw: list[list[Any]] = []
        windows: list[dict[str, Any]] = []
        with self.session() as s:
            for (blob,) in s.execute(q):
                doc = orjson.loads(blob)
                windows.append(doc)
                r = doc.get("reservoir") or {}
                if len(raw) < limit and r.get("rows"):
                    columns = columns or list(r.get("columns", []))
                    raw += r["rows"]
        if raw:
            return columns, raw[:limit], "raw sample"
        cols, rows = rows_from_sketches(ref, windows, limit)
        return cols, rows, "sketches"


def rows_from_sketches(
    reference: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], limit: int, seed: int = 0
) -> tuple[list[str], list[list[Any]]]:
    """``min(limit, rows seen)`` rows whose every column has the distribution the windows
    saw: a numeric column's values are its merged sketch's quantiles at mid-ranks, a
    categorical column's values follow its summed histogram; columns are shuffled apart."""
    layout = ColumnLayout.from_reference(reference)
    rng = np.random.default_rng(seed)
    seen = sum(int(w.get("n", 0)) for w in windows)
    m = min(limit, seen)
    if m == 0:
        return list(layout.names), []
    out: list[np.ndarray] = []
    for i, name in enumerate(layout.names):
        found = [
            (w.get("prediction") if name == PREDICTION else w.get("features", {}).get(name))
            for w in windows
        ]
        cols: list[Mapping[str, Any]] = [c for c in found if c]
        spec = layout.specs[i]
        if layout.kinds[i] == "numeric":
            sk = quantile_sketch.merge(c.get("kll") for c in cols)
            if sk is None or sk.is_empty():
                raise ValueError(
                    f"no raw rows and no sketch of {name!r} in this period's windows "
                    "(windows from gateways older than the sketches?)"
                )
            values = quantile_sketch.representative_values(sk, m)
        else:
            cats = np.asarray([*spec["categories"], np.nan], dtype=np.float64)
            counts = np.zeros(len(cats))
            for c in cols:
                cc = np.asarray(c["counts"], dtype=np.float64)
                counts[: cc.size] += cc[: counts.size]
            values = np.repeat(cats, _apportion(counts, m))
        rng.shuffle(values)
        out.append(values)
    rows = np.column_stack(out)
    return list(layout.names), [[None if v != v else float(v) for v in r] for r in rows.tolist()]


def _apportion(weights: np.ndarray, m: int) -> np.ndarray:
    """Whole numbers adding up to ``m`` in proportion to ``weights`` (largest remainder)."""
    total = weights.sum()
    if total <= 0:
        out = np.zeros(weights.size, dtype=np.int64)
        out[-1] = m
        return out
    exact = weights / total * m
    out = np.floor(exact).astype(np.int64)
    rest = m - int(out.sum())
    if rest:
        out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
    return out


@dataclass
class _Sums:
    """Expected-accuracy sums of some windows (they add: farmiq.wire.ExpectedAccuracySums)."""

    rows: int = 0
    total: float = 0.0
    var: float = 0.0

    def add(self, other: _Sums) -> None:
        self.rows += other.rows
        self.total += other.total
        self.var += other.var

    def estimate(self) -> dict[str, Any]:
        if not self.rows:
            return {"expected_accuracy": None, "rows": 0, "std_error": None}
        return {
            "expected_accuracy": self.total / self.rows,
            "rows": self.rows,
            "std_error": math.sqrt(self.var) / self.rows,
        }


def _concept_row(device_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    try:
        ev = WireConceptEvent.model_validate(doc)  # farmiq.wire.ConceptEvent
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise WindowError(f"malformed concept_drift event: {where}: {first['msg']}") from None
    model, detector, n_seen, at = ev.model, ev.detector, ev.n_seen, ev.at
    key = ev.key or f"{device_id}/concept/{model}/{detector}/{n_seen}/{round(at * 1000)}"
    return {
        "key": str(key)[:255],
        "device_id": device_id,
        "model": model,
        "detector": detector,
        "previous": ev.previous,
        "state": ev.state,
        "n_seen": n_seen,
        "estimate": ev.estimate,
        "at": at,
    }


def _insert_ignore(engine: Engine, table: Any) -> Any:
    """INSERT that skips rows a concurrent ingest stored first (redelivery races)."""
    name = engine.dialect.name
    if name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return table.__table__.insert()
