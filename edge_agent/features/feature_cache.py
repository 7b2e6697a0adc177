"""The gateway's feature cache: raw readings in SQLite, windowed aggregates in memory.

Design (see docs/features.md):

- SQLite (WAL) is the source of truth: ``readings`` holds raw sensor readings (deduplicated
  on ``(entity_id, sensor, ts_ms)``, so an MQTT redelivery never counts twice),
  ``feature_values`` holds the last aggregate of every (entity, feature), and
  ``cloud_features`` holds values pushed by the control plane (flock age, breed).
- Each ``ingest`` call is ONE transaction: the raw rows and the updated aggregate rows are
  committed together or not at all. A kill -9 mid-ingest loses at most that batch; SQLite's
  WAL recovery guarantees the file is never corrupt.
- In memory, each (entity, sensor) series keeps the readings of its longest window (sorted
  lists of ``ts_ms`` and values). A lookup finds the window with ``bisect`` and caches the
  window statistics together with the interval of times over which they stay exact (until
  the next reading arrives or the oldest one leaves the window), so the common lookup is a
  dict access. On open the series are rebuilt from ``readings``.

The window of a feature at time ``t`` is ``(t - W, t]`` on integer milliseconds, exactly as
the control plane computes it for Feast (``control_plane.feature_store``); a test proves the
two agree.

This module must stay light: no feast, pandas or pyarrow (gateways do not carry them).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from farmiq.features import SCHEMAS, VIEWS, Aggregation, FeatureSchema, FeatureView, MissingRule
from farmiq.features.definitions import CLOUD_PAYLOAD_KIND, Feature, SourceKind

log = logging.getLogger(__name__)


# Plain sqlite3 and SQL, like the outbox and the drift checkpoint (one table style on the
# gateway): sqlite-utils was used here only to create three tables, and it cost the daemon
# ~5.7 MB of idle RSS (with pluggy, click, dateutil and six it imports; bench/footprint.py).
_TABLES = (
    "CREATE TABLE IF NOT EXISTS [readings] ([entity_id] TEXT NOT NULL, [sensor] TEXT NOT NULL,"
    " [ts_ms] INTEGER NOT NULL, [value] FLOAT NOT NULL,"
    " PRIMARY KEY ([entity_id], [sensor], [ts_ms]))",
    "CREATE INDEX IF NOT EXISTS [idx_readings_ts_ms] ON [readings] ([ts_ms])",  # retention
    "CREATE TABLE IF NOT EXISTS [feature_values] ([entity_id] TEXT, [view] TEXT,"
    " [feature] TEXT, [value] FLOAT, [as_of_ms] INTEGER, [window_count] INTEGER,"
    " PRIMARY KEY ([entity_id], [view], [feature]))",
    "CREATE TABLE IF NOT EXISTS [cloud_features] ([view] TEXT, [entity_id] TEXT,"
    " [feature] TEXT, [value_json] TEXT, [event_ms] INTEGER, [received_ms] INTEGER,"
    " PRIMARY KEY ([view], [entity_id], [feature]))",
)

FLAG_OK = "ok"
FLAG_STALE = "stale"  # last value, older than its TTL (rule last_value_flagged)
FLAG_DEFAULT = "default"  # declared default used (rule default)

_INF = float("inf")
_first = itemgetter(0)
_TRIM_SLACK = 256  # trim a series' head only when this many readings have expired
# Bounds on what the cloud may push (down/features): one payload, and the entities kept in
# memory. A gateway serves a handful of flocks; far more is a bug upstream, not data.
MAX_CLOUD_ROWS = 10_000
MAX_CLOUD_ENTITIES = 10_000
_MAX_EVENT_TS = 1e11  # seconds; year 5138. Larger is garbage, and x1000 must fit an int64


class FeatureUnavailable(LookupError):
    """A feature whose rule is ``error`` (or that has no value at all) cannot be served."""

    def __init__(self, feature: str, reason: str) -> None:
        super().__init__(f"feature {feature}: {reason}")
        self.feature = feature
        self.reason = reason


class FeaturePayloadError(ValueError):
    """A cloud-features payload is malformed; nothing of it was applied."""


@dataclass(frozen=True)
class IngestResult:
    accepted: int  # new readings committed
    duplicates: int  # already stored (redelivery), ignored
    rejected: int  # malformed (bad types, NaN/inf), ignored
    unknown_sensor: int  # stored raw, but no feature aggregates this sensor


class _Running:
    """Aggregates of one series over (newest - W, newest], updated in O(1) per reading.

    Running sum and count with an eviction pointer, and monotonic deques for max and min
    (the classic sliding-window maximum). Out-of-order readings mark it invalid and it is
    rebuilt from the series on next use. The running sum is re-summed exactly (math.fsum)
    every time as many readings have left as the window holds, so float error never grows.
    """

    __slots__ = ("count", "evicted", "lo", "maxq", "minq", "total", "valid", "w_ms")

    def __init__(self, w_ms: int) -> None:
        self.w_ms = w_ms
        self.valid = False
        self.lo = self.count = self.evicted = 0
        self.total = 0.0
        self.maxq: deque[tuple[int, float]] = deque()
        self.minq: deque[tuple[int, float]] = deque()

    def rebuild(self, ts: list[int], vals: list[float]) -> None:
        self.lo = bisect_right(ts, ts[-1] - self.w_ms) if ts else 0
        self.count = len(ts) - self.lo
        self.total = math.fsum(vals[self.lo :])
        self.evicted = 0
        self.maxq.clear()
        self.minq.clear()
        for i in range(self.lo, len(ts)):
            self._push_q(ts[i], vals[i])
        self.valid = True

    def _push_q(self, ts_ms: int, value: float) -> None:
        mq, nq = self.maxq, self.minq
        while mq and mq[-1][1] <= value:
            mq.pop()
        mq.append((ts_ms, value))
        while nq and nq[-1][1] >= value:
            nq.pop()
        nq.append((ts_ms, value))

    def push(self, ts: list[int], vals: list[float], ts_ms: int, value: float) -> None:
        """``ts_ms``/``value`` was just appended to ``ts``/``vals`` (in order)."""
        self.total += value
        self.count += 1
        self._push_q(ts_ms, value)
        cut = ts_ms - self.w_ms
        lo = self.lo
        if ts[lo] <= cut:
            start = lo
            while ts[lo] <= cut:
                self.total -= vals[lo]
                lo += 1
            n = lo - start
            self.lo = lo
            self.count -= n
            self.evicted += n
            mq, nq = self.maxq, self.minq
            while mq[0][0] <= cut:
                mq.popleft()
            while nq[0][0] <= cut:
                nq.popleft()
            if self.evicted > max(1024, self.count):
                self.total = math.fsum(vals[lo:])
                self.evicted = 0

    def value(self, agg: Aggregation, vals: list[float]) -> float:
        if agg is Aggregation.MEAN:
            return self.total / self.count
        if agg is Aggregation.SUM:
            return self.total
        if agg is Aggregation.MAX:
            return self.maxq[0][1]
        if agg is Aggregation.MIN:
            return self.minq[0][1]
        if agg is Aggregation.COUNT:
            return float(self.count)
        return vals[-1]


class _Series:
    """Readings of one (entity, sensor), sorted by time, covering its longest window, with
    the running aggregates of each window that a feature defines on this sensor."""

    __slots__ = ("keep_ms", "running", "ts", "vals")

    def __init__(self, keep_ms: int, windows_ms: Iterable[int] = ()) -> None:
        self.keep_ms = keep_ms
        self.ts: list[int] = []
        self.vals: list[float] = []
        self.running: dict[int, _Running] = {w: _Running(w) for w in windows_ms}

    def add(self, ts_ms: int, value: float) -> bool:
        """Insert a reading; False if it is a duplicate or older than the kept horizon."""
        ts = self.ts
        if not ts or ts_ms > ts[-1]:
            ts.append(ts_ms)
            self.vals.append(value)
            for r in self.running.values():
                if r.valid:
                    r.push(ts, self.vals, ts_ms, value)
            return True
        if ts_ms <= ts[-1] - self.keep_ms:
            return False  # outside every window this series serves from now on
        i = bisect_left(ts, ts_ms)
        if ts[i] == ts_ms:
            return False
        ts.insert(i, ts_ms)
        self.vals.insert(i, value)
        for r in self.running.values():
            r.valid = False  # rare (late reading): rebuilt on next use
        return True

    def aggregate(self, w_ms: int, agg: Aggregation) -> tuple[float, int]:
        """Value and count over (newest - W, newest]."""
        r = self.running[w_ms]
        if not r.valid:
            r.rebuild(self.ts, self.vals)
        return r.value(agg, self.vals), r.count

    def contains(self, ts_ms: int) -> bool:
        i = bisect_left(self.ts, ts_ms)
        return i < len(self.ts) and self.ts[i] == ts_ms

    def trim(self) -> None:
        ts = self.ts
        if ts:
            cut = bisect_right(ts, ts[-1] - self.keep_ms)
            if cut > _TRIM_SLACK:
                del ts[:cut]
                del self.vals[:cut]
                for r in self.running.values():
                    r.lo -= cut  # every window starts after the kept horizon


class _Window:
    """Statistics of one series over one window, exact for ``valid_from <= t < valid_until``."""

    __slots__ = (
        "count",
        "last",
        "maximum",
        "minimum",
        "newest",
        "total",
        "valid_from",
        "valid_until",
    )

    def __init__(self, s: _Series, t_ms: int, w_ms: int) -> None:
        ts = s.ts
        lo = bisect_right(ts, t_ms - w_ms)
        hi = bisect_right(ts, t_ms)
        self.valid_from = t_ms
        until = _INF
        if lo < hi:
            until = ts[lo] + w_ms  # the oldest reading leaves the window then
        if hi < len(ts):
            until = min(until, ts[hi])  # a later reading (only in as-of queries) enters
        self.valid_until = until
        self.count = hi - lo
        self.newest = ts[hi - 1] if hi else None  # newest reading at or before t, any window
        if self.count:
            vals = s.vals[lo:hi]
            self.total = math.fsum(vals)
            self.maximum = max(vals)
            self.minimum = min(vals)
            self.last = vals[-1]
        else:
            self.total = self.maximum = self.minimum = self.last = math.nan

    def value(self, agg: Aggregation) -> float:
        if agg is Aggregation.MEAN:
            return self.total / self.count
        if agg is Aggregation.MAX:
            return self.maximum
        if agg is Aggregation.SUM:
            return self.total
        if agg is Aggregation.MIN:
            return self.minimum
        if agg is Aggregation.COUNT:
            return float(self.count)
        return self.last


def _sensor_plan(views: Iterable[FeatureView]) -> dict[str, list[tuple[FeatureView, Feature]]]:
    plan: dict[str, list[tuple[FeatureView, Feature]]] = {}
    for v in views:
        if v.source is SourceKind.SENSOR:
            for f in v.features:
                assert f.sensor is not None
                plan.setdefault(f.sensor, []).append((v, f))
    return plan


class FeatureCache:
    """Gateway feature store. Lookups belong on the agent's event loop thread; the writers
    (``ingest``, ``apply_cloud_features``, ``prune``) may run in worker threads and are
    serialised by a lock, because they share one SQLite connection and a second
    ``BEGIN`` inside a running transaction fails."""

    def __init__(
        self,
        path: str | Path,
        *,
        views: Sequence[FeatureView] = VIEWS,
        schemas: Mapping[str, FeatureSchema] | None = None,
        retention_s: float = 7 * 86400,
        synchronous: str = "NORMAL",
        prune_interval_s: float = 3600,
    ) -> None:
        """Open (or create) the store at ``path`` and rebuild the in-memory windows.

        ``synchronous``: ``NORMAL`` (default) survives a process crash (kill -9) losing at
        most the batch in flight; ``FULL`` also survives power loss at one fsync per batch.
        """
        if synchronous.upper() not in ("NORMAL", "FULL", "EXTRA"):
            raise ValueError("synchronous must be NORMAL, FULL or EXTRA")
        self.path = Path(path)
        self.views = {v.name: v for v in views}
        self.schemas = dict(schemas if schemas is not None else SCHEMAS)
        self.retention_ms = int(retention_s * 1000)
        self._prune_interval = prune_interval_s
        self._next_prune = 0.0
        self._plan = _sensor_plan(self.views.values())
        self._keep_ms = {s: max(v.window_ms for v, _ in pairs) for s, pairs in self._plan.items()}
        self._windows_ms = {s: sorted({v.window_ms for v, _ in p}) for s, p in self._plan.items()}
        self._series: dict[tuple[str, str], _Series] = {}
        self._windows: dict[tuple[str, str, int], _Window] = {}
        self._cloud: dict[tuple[str, str], dict[str, tuple[Any, int]]] = {}
        self._write_lock = threading.RLock()  # one write transaction at a time (see class doc)

        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA busy_timeout=5000")
        self._create_tables()
        self._load()

    # ---------------------------------------------------------------- storage
    def _create_tables(self) -> None:
        for sql in _TABLES:
            self.conn.execute(sql)

    def _load(self) -> None:
        conn = self.conn
        for sensor, keep in self._keep_ms.items():
            newest = dict(
                conn.execute(
                    "SELECT entity_id, MAX(ts_ms) FROM readings WHERE sensor=? GROUP BY entity_id",
                    (sensor,),
                ).fetchall()
            )
            for entity, top in newest.items():
                s = _Series(keep, self._windows_ms[sensor])
                for ts_ms, value in conn.execute(
                    "SELECT ts_ms, value FROM readings WHERE entity_id=? AND sensor=? "
                    "AND ts_ms > ? ORDER BY ts_ms",
                    (entity, sensor, top - keep),
                ):
                    s.ts.append(ts_ms)
                    s.vals.append(value)
                self._series[(entity, sensor)] = s
        for view, entity, feature, value_json, event_ms in conn.execute(
            "SELECT view, entity_id, feature, value_json, event_ms FROM cloud_features"
        ):
            self._cloud.setdefault((view, entity), {})[feature] = (json.loads(value_json), event_ms)

    # ----------------------------------------------------------------- ingest
    def ingest(self, readings: Iterable[Sequence[Any]]) -> IngestResult:
        with self._write_lock:  # MCUs' batches arrive on several worker threads at once
            return self._ingest(readings)

    def _ingest(self, readings: Iterable[Sequence[Any]]) -> IngestResult:
        """Store ``(entity_id, sensor, ts_seconds, value)`` readings in one transaction.

        Malformed readings are counted and skipped (never raise): a bad sensor frame must
        not cost the batch. Aggregates of every touched series are updated in the same
        transaction.
        """
        rows: list[tuple[str, str, int, float]] = []
        valid: list[tuple[int, str, str, float]] = []
        touched: set[tuple[str, str]] = set()
        rejected = dup = unknown = 0
        series = self._series
        keep = self._keep_ms
        isfinite = math.isfinite
        for r in readings:
            try:
                entity, sensor, ts, value = r
                value = float(value)
                ts_ms = round(ts * 1000)
                ok = (
                    type(entity) is str
                    and type(sensor) is str
                    and entity
                    and sensor
                    and isfinite(value)
                    and ts_ms > 0
                )
            except (TypeError, ValueError, OverflowError):
                ok = False
            if ok:
                valid.append((ts_ms, entity, sensor, value))
            else:
                rejected += 1
        # Time order inside the batch keeps the running aggregates on their O(1) path
        # (timsort is linear on the usual, already sorted batch; stable, so the first of
        # two readings with the same timestamp wins on both sides).
        valid.sort(key=_first)
        for ts_ms, entity, sensor, value in valid:
            key = (entity, sensor)
            s = series.get(key)
            if s is None:
                k = keep.get(sensor)
                if k is None:
                    unknown += 1
                    rows.append((entity, sensor, ts_ms, value))
                    continue
                s = series[key] = _Series(k, self._windows_ms[sensor])
            if s.add(ts_ms, value):
                touched.add(key)
                rows.append((entity, sensor, ts_ms, value))
            elif s.contains(ts_ms):
                dup += 1
            else:
                rows.append((entity, sensor, ts_ms, value))  # too old for windows; keep raw
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.executemany(
                "INSERT OR IGNORE INTO readings (entity_id, sensor, ts_ms, value) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            inserted = cur.rowcount if cur.rowcount >= 0 else len(rows)
            self._write_aggregates(touched)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._reload(touched)  # memory ran ahead of the rolled-back disk
            raise
        windows = self._windows
        for key in touched:
            series[key].trim()
            for v, _ in self._plan[key[1]]:
                windows.pop((key[0], key[1], v.window_ms), None)
        dup += len(rows) - inserted  # raw rows already on disk (older than memory horizon)
        if self._prune_interval and time.monotonic() >= self._next_prune and rows:
            self.prune(now=max(r[2] for r in rows) / 1000)
        return IngestResult(inserted, dup, rejected, unknown)

    def _write_aggregates(self, touched: set[tuple[str, str]]) -> None:
        """Persist, per touched feature, its value as of the newest reading of its sensor."""
        out = []
        for entity, sensor in touched:
            s = self._series[(entity, sensor)]
            t = s.ts[-1]
            for v, f in self._plan[sensor]:
                assert f.aggregation is not None
                value, count = s.aggregate(v.window_ms, f.aggregation)
                out.append((entity, v.name, f.name, value, t, count))
        self.conn.executemany(
            "INSERT OR REPLACE INTO feature_values "
            "(entity_id, view, feature, value, as_of_ms, window_count) VALUES (?,?,?,?,?,?)",
            out,
        )

    def _reload(self, keys: Iterable[tuple[str, str]]) -> None:
        for entity, sensor in keys:
            s = _Series(self._keep_ms[sensor], self._windows_ms[sensor])
            rows = self.conn.execute(
                "SELECT ts_ms, value FROM readings WHERE entity_id=? AND sensor=? "
                "ORDER BY ts_ms DESC",
                (entity, sensor),
            )
            got: list[tuple[int, float]] = []
            for ts_ms, value in rows:
                if got and ts_ms <= got[0][0] - s.keep_ms:
                    break
                got.append((ts_ms, value))
            for ts_ms, value in reversed(got):
                s.ts.append(ts_ms)
                s.vals.append(value)
            self._series[(entity, sensor)] = s
            for v, _ in self._plan[sensor]:
                self._windows.pop((entity, sensor, v.window_ms), None)

    def prune(self, now: float | None = None) -> int:
        """Delete raw readings older than the retention period; returns rows deleted."""
        now = time.time() if now is None else now
        self._next_prune = time.monotonic() + self._prune_interval
        cutoff = int(now * 1000) - max(self.retention_ms, *self._keep_ms.values(), 0)
        conn = self.conn
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute("DELETE FROM readings WHERE ts_ms < ?", (cutoff,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return n

    # ------------------------------------------------------------------ query
    def window_value(
        self, view: str, feature: str, entity_id: str, now: float | None = None
    ) -> float | None:
        """The raw aggregate of one sensor feature over ``(now - W, now]``; None if empty."""
        v = self.views[view]
        f = v.feature(feature)
        assert f.sensor is not None and f.aggregation is not None
        w = self._window(entity_id, f.sensor, v.window_ms, _now_ms(now))
        return None if w is None or not w.count else w.value(f.aggregation)

    def _window(self, entity: str, sensor: str, w_ms: int, t_ms: int) -> _Window | None:
        key = (entity, sensor, w_ms)
        w = self._windows.get(key)
        if w is not None and w.valid_from <= t_ms < w.valid_until:
            return w
        s = self._series.get((entity, sensor))
        if s is None:
            return None
        w = _Window(s, t_ms, w_ms)
        self._windows[key] = w
        return w

    def vector(
        self,
        schema: FeatureSchema | str,
        entity_keys: Mapping[str, str],
        now: float | None = None,
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """Assemble the float32 feature vector of ``schema`` for the given entity keys.

        ``entity_keys`` maps join keys to ids, e.g. ``{"barn_id": "b1", "flock_id": "f7"}``.
        Returns the vector and one flag per feature (``ok``, ``stale``, ``default``).
        Raises ``FeatureUnavailable`` for a feature that cannot be served under its rule,
        ``KeyError`` for an unknown schema or a missing entity key.
        """
        if isinstance(schema, str):
            schema = self.schemas[schema]
        t_ms = _now_ms(now)
        refs = schema.refs
        out = np.empty(len(refs), dtype=np.float32)
        flags: list[str] = []
        for i, r in enumerate(refs):
            v, f = r.view, r.feature
            key = entity_keys.get(v.entity.join_key)
            if key is None:
                raise KeyError(f"entity key {v.entity.join_key!r} is required for {r.ref}")
            if v.source is SourceKind.SENSOR:
                value, flag = self._sensor_value(v, f, key, t_ms)
            else:
                value, flag = self._cloud_value(v, f, key, t_ms)
            out[i] = value
            flags.append(flag)
        return out, tuple(flags)

    def inspect(
        self, schema: FeatureSchema | str, entity_keys: Mapping[str, str], now: float | None = None
    ) -> list[dict[str, Any]]:
        """Every feature of ``schema`` for the entity keys, one by one, with its flag or the
        reason it cannot be served (for operators; ``vector`` is the serving path)."""
        if isinstance(schema, str):
            schema = self.schemas[schema]
        t_ms = _now_ms(now)
        out: list[dict[str, Any]] = []
        for r in schema.refs:
            v, f = r.view, r.feature
            key = entity_keys.get(v.entity.join_key)
            item: dict[str, Any] = {"feature": r.ref, "entity": key}
            try:
                if key is None:
                    raise FeatureUnavailable(r.ref, f"entity key {v.entity.join_key!r} not given")
                if v.source is SourceKind.SENSOR:
                    value, flag = self._sensor_value(v, f, key, t_ms)
                else:
                    value, flag = self._cloud_value(v, f, key, t_ms)
                item.update(value=float(value), flag=flag)
            except FeatureUnavailable as exc:
                item.update(value=None, flag="unavailable", reason=str(exc))
            out.append(item)
        return out

    def _sensor_value(
        self, v: FeatureView, f: Feature, entity: str, t_ms: int
    ) -> tuple[float, str]:
        sensor = f.sensor
        assert sensor is not None and f.aggregation is not None
        w = self._window(entity, sensor, v.window_ms, t_ms)
        if w is not None and w.count and t_ms - w.newest <= f.staleness_ttl_s * 1000:  # type: ignore[operator]
            return w.value(f.aggregation), FLAG_OK
        # stale or missing: the declared rule decides
        if w is None or w.newest is None:
            return self._apply_rule(f, None, "no readings")
        age = (t_ms - w.newest) / 1000
        last = None
        if f.missing is MissingRule.LAST_VALUE_FLAGGED:
            s = self._series[(entity, sensor)]
            last = _Window(s, w.newest, v.window_ms).value(f.aggregation)
        return self._apply_rule(
            f, last, f"newest {sensor} reading is {age:.0f} s old (ttl {f.staleness_ttl_s:.0f} s)"
        )

    def _cloud_value(self, v: FeatureView, f: Feature, entity: str, t_ms: int) -> tuple[float, str]:
        got = self._cloud.get((v.name, entity), {}).get(f.name)
        if got is None:
            return self._apply_rule(f, None, f"no value received for {v.entity.name} {entity}")
        value, event_ms = got
        try:
            encoded = f.encode(value)
        except ValueError as exc:
            return self._apply_rule(f, None, str(exc))
        age = (t_ms - event_ms) / 1000
        if age <= f.staleness_ttl_s:
            return encoded, FLAG_OK
        return self._apply_rule(
            f, encoded, f"value is {age:.0f} s old (ttl {f.staleness_ttl_s:.0f} s)"
        )

    @staticmethod
    def _apply_rule(f: Feature, last: float | None, reason: str) -> tuple[float, str]:
        if f.missing is MissingRule.DEFAULT:
            assert f.default is not None
            return f.encode(f.default), FLAG_DEFAULT
        if f.missing is MissingRule.LAST_VALUE_FLAGGED and last is not None:
            return last, FLAG_STALE
        raise FeatureUnavailable(f.name, reason)

    # ------------------------------------------------------- schema and cloud
    def can_serve(self, schema_name: str, version: str) -> tuple[bool, str]:
        """Whether a bundle needing ``schema_name`` at ``version`` can be fed by this cache."""
        schema = self.schemas.get(schema_name)
        if schema is None:
            known = ", ".join(f"{s.name} {s.version}" for s in self.schemas.values()) or "none"
            return (
                False,
                f"feature schema {schema_name!r} is unknown to this gateway (serves: {known})",
            )
        if schema.version != version:
            return False, (
                f"feature schema {schema_name!r} version {version!r} differs from the "
                f"gateway's {schema.version!r}: the model was built against other feature "
                "definitions; update the agent or rebuild the bundle"
            )
        for v in schema.used_views:
            mine = self.views.get(v.name)
            if mine != v:
                return (
                    False,
                    f"feature view {v.name!r} of schema {schema_name!r} is not served here",
                )
        return True, f"feature schema {schema_name} {version} is served"

    def apply_cloud_features(self, payload: bytes, received: float | None = None) -> int:
        """Apply a ``down/features`` message from the control plane; returns values stored.

        Payload (JSON): ``{"kind": "farmiq-features/1", "views": {"flock_profile":
        [{"entity_id": "f7", "event_ts": 1.7e9, "values": {"flock_age_days": 21,
        "breed": "ross_308"}}]}}``. The whole payload is validated before anything is
        written; a newer stored value is never overwritten by an older one.
        """
        try:
            # orjson: refuses NaN/Infinity and nesting deeper than 1024 (json.loads raises
            # RecursionError on a deeply nested payload)
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise FeaturePayloadError(f"features payload is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("kind") != CLOUD_PAYLOAD_KIND:
            raise FeaturePayloadError(f"features payload kind must be {CLOUD_PAYLOAD_KIND!r}")
        views = doc.get("views")
        if not isinstance(views, dict):
            raise FeaturePayloadError("features payload needs a 'views' object")
        received_ms = _now_ms(received)
        todo: list[tuple[str, str, str, Any, int]] = []
        n_rows = 0
        for view_name, rows in views.items():
            v = self.views.get(view_name)
            if v is None or v.source is not SourceKind.CLOUD:
                raise FeaturePayloadError(f"{view_name!r} is not a cloud feature view here")
            if not isinstance(rows, list):
                raise FeaturePayloadError(f"{view_name}: rows must be a list")
            n_rows += len(rows)
            if n_rows > MAX_CLOUD_ROWS:
                raise FeaturePayloadError(f"features payload has over {MAX_CLOUD_ROWS} rows")
            for row in rows:
                if not isinstance(row, dict):
                    raise FeaturePayloadError(f"{view_name}: each row must be an object")
                entity, ts, values = row.get("entity_id"), row.get("event_ts"), row.get("values")
                if not isinstance(entity, str) or not entity:
                    raise FeaturePayloadError(f"{view_name}: row without entity_id")
                if (
                    not isinstance(ts, int | float)
                    or isinstance(ts, bool)
                    or not math.isfinite(ts)
                    or not 0 <= ts <= _MAX_EVENT_TS
                ):
                    raise FeaturePayloadError(
                        f"{view_name}/{entity}: event_ts must be seconds since the epoch"
                    )
                if not isinstance(values, dict):
                    raise FeaturePayloadError(f"{view_name}/{entity}: values must be an object")
                for name, value in values.items():
                    try:
                        f = v.feature(name)
                    except KeyError as exc:
                        raise FeaturePayloadError(str(exc.args[0])) from None
                    if value is None:
                        continue  # the cloud has no value: keep ours (and its age)
                    if f.dtype == "string":
                        if not isinstance(value, str):
                            raise FeaturePayloadError(f"{view_name}.{name} must be a string")
                    elif isinstance(value, bool) or not isinstance(value, int | float):
                        raise FeaturePayloadError(f"{view_name}.{name} must be a number")
                    todo.append((view_name, entity, name, value, round(ts * 1000)))
        new_entities = {(vn, e) for vn, e, *_ in todo} - self._cloud.keys()
        if len(self._cloud) + len(new_entities) > MAX_CLOUD_ENTITIES:
            raise FeaturePayloadError(
                f"refusing cloud features for {len(new_entities)} more entities: "
                f"{len(self._cloud)} held, at most {MAX_CLOUD_ENTITIES}"
            )
        with self._write_lock:
            stored = []
            for view_name, entity, name, value, event_ms in todo:
                cur = self._cloud.get((view_name, entity), {}).get(name)
                if cur is None or cur[1] <= event_ms:
                    stored.append((view_name, entity, name, value, event_ms))
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO cloud_features "
                    "(view, entity_id, feature, value_json, event_ms, received_ms) "
                    "VALUES (?,?,?,?,?,?)",
                    [(vn, e, n, json.dumps(val), ms, received_ms) for vn, e, n, val, ms in stored],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            for view_name, entity, name, value, event_ms in stored:
                self._cloud.setdefault((view_name, entity), {})[name] = (value, event_ms)
        return len(stored)

    # ----------------------------------------------------------------- admin
    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now_ms(now: float | None) -> int:
    # floor, not round: a reading at ts_ms belongs to (t - W, t] only once t_ms >= ts_ms
    return math.floor((time.time() if now is None else now) * 1000)
