"""The control plane's feature store: a Feast repository generated from farmiq.features.

Everything here is driven from Python inside the long-running control-plane process: the
``feast`` CLI costs seconds of imports per call. Feast (and pandas/pyarrow) are imported
lazily, when a ``FeastFeatureStore`` is first used, so importing this module is cheap.

Layout of the generated repository (``repo_dir``)::

    feature_store.yaml          # written for operators: `feast -c repo_dir ...` works on it
    registry.db                 # Feast registry (FeatureStore.apply writes it)
    online.db                   # SQLite online store (default)
    offline/readings/*.parquet  # raw sensor readings, as received (append-only parts)
    offline/<view>.parquet      # per sensor view: windowed aggregates at every change point
    offline/<view>.parquet      # per cloud view: the farm records (flock age, breed)

Window aggregates: Feast's file offline store has no windowed aggregation, so this module
computes them (``compute_window_aggregates``) with exactly the gateway's definition,
``(t - W, t]`` on integer milliseconds. It writes one row at every time the window contents
change: when a reading arrives (ts) and when it leaves (ts + W). A point-in-time join
(``get_historical_features``) then returns, for any t, the aggregate over ``(t - W, t]``, and
the FeatureView's TTL equals W, which bounds the gap between consecutive change points.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from farmiq.features import ENTITIES, SCHEMAS, VIEWS, FeatureSchema, FeatureView, SourceKind
from farmiq.features.definitions import CLOUD_PAYLOAD_KIND, Aggregation, Entity

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

PROJECT = "farmiq"
READINGS_COLUMNS = ("entity_id", "sensor", "ts_ms", "value")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
REPO_PYTHON = "farmiq_features.py"  # the generated definitions the `feast` CLI reads


def online_store_config(url: str | None, repo_dir: Path) -> dict[str, Any]:
    """Feast online-store settings from a URL.

    - ``None`` or ``sqlite:///path``: SQLite file (default ``repo_dir/online.db``);
    - ``postgresql://user:password@host:5432/db[?sslmode=...]``: Feast's PostgreSQL online
      store (``feast[postgres]``, in the ``control`` extra); ``sslmode`` defaults to
      ``disable`` for a loopback host, else ``require``;
    - ``redis://host:6379[/db]``: Feast's Redis online store (``feast[redis]``, in the
      ``control`` extra).
    """
    if not url:
        return {"type": "sqlite", "path": str(repo_dir / "online.db")}
    u = urlparse(url)
    if u.scheme == "sqlite":
        return {"type": "sqlite", "path": unquote(u.path) or str(repo_dir / "online.db")}
    if u.scheme in ("postgresql", "postgres") or u.scheme.startswith("postgresql+"):
        host = u.hostname or "127.0.0.1"
        query = parse_qs(u.query)
        # Feast defaults to sslmode=require, which a local server without TLS refuses: the
        # URL's sslmode wins; without one, a loopback server is reached without TLS.
        default_ssl = "disable" if host in LOOPBACK_HOSTS else "require"
        sslmode = (query.get("sslmode") or [default_ssl])[0] or default_ssl
        return {
            "type": "postgres",
            "host": host,
            "port": u.port or 5432,
            "database": (u.path or "/postgres").lstrip("/") or "postgres",
            "db_schema": (query.get("schema") or ["public"])[0],
            "user": unquote(u.username or "postgres"),
            "password": unquote(u.password or ""),
            "sslmode": sslmode,
        }
    if u.scheme in ("redis", "rediss"):
        host = f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"
        opts = []
        if u.password:
            opts.append(f"password={unquote(u.password)}")
        if u.scheme == "rediss":
            opts.append("ssl=true")
        db = (u.path or "").lstrip("/")
        if db:
            opts.append(f"db={db}")
        return {"type": "redis", "connection_string": ",".join([host, *opts])}
    raise ValueError(
        f"unsupported online store URL scheme {u.scheme!r}: use sqlite://, postgresql:// or redis://"
    )


def _feast_yaml(cfg: Mapping[str, Any]) -> str:
    # feature_store.yaml is JSON-compatible YAML; json.dumps keeps us free of a YAML writer
    return "\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.items()) + "\n"


def compute_window_aggregates(readings: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    """Windowed aggregates of ``view`` at every change point, per entity.

    ``readings`` has columns entity_id, sensor, ts_ms (int), value (float). Duplicates of
    (entity_id, sensor, ts_ms) keep the first, like the gateway's INSERT OR IGNORE.
    Returns ``<join_key>, event_timestamp, <feature>...`` with float32 features (NaN where
    the window is empty).
    """
    import numpy as np
    import pandas as pd

    w_ms = view.window_ms
    sensors = view.sensors
    cols: dict[str, list[Any]] = {view.entity.join_key: [], "event_timestamp": []}
    for f in view.features:
        cols[f.name] = []
    r = readings[readings["sensor"].isin(sensors)]
    r = r.drop_duplicates(["entity_id", "sensor", "ts_ms"], keep="first")
    r = r.sort_values(["entity_id", "sensor", "ts_ms"], kind="stable")
    for entity, er in r.groupby("entity_id", sort=True):
        per_sensor = {
            s: (g["ts_ms"].to_numpy(np.int64), g["value"].to_numpy(np.float64))
            for s, g in er.groupby("sensor")
        }
        change = np.unique(
            np.concatenate([np.concatenate([t, t + w_ms]) for t, _ in per_sensor.values()])
        )
        n = len(change)
        cols[view.entity.join_key].append(np.full(n, entity, dtype=object))
        cols["event_timestamp"].append(change)
        for f in view.features:
            assert f.sensor is not None and f.aggregation is not None
            if f.sensor not in per_sensor:
                cols[f.name].append(np.full(n, np.nan))
                continue
            ts, vals = per_sensor[f.sensor]
            lo = np.searchsorted(ts, change - w_ms, side="right")
            hi = np.searchsorted(ts, change, side="right")
            cols[f.name].append(_aggregate(f.aggregation, vals, lo, hi))
    if not cols["event_timestamp"]:
        out = pd.DataFrame({k: pd.Series([], dtype="float32") for k in cols})
        out[view.entity.join_key] = out[view.entity.join_key].astype(object)
        out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], unit="ms", utc=True)
        return out
    data: dict[str, Any] = {k: np.concatenate(v) for k, v in cols.items()}
    data["event_timestamp"] = pd.to_datetime(data["event_timestamp"], unit="ms", utc=True)
    for f in view.features:
        data[f.name] = data[f.name].astype(np.float32)
    return pd.DataFrame(data)


def _aggregate(agg: Aggregation, vals: Any, lo: Any, hi: Any) -> Any:
    """Aggregate ``vals[lo[i]:hi[i]]`` for every i (NaN where empty), vectorised."""
    import numpy as np

    count = hi - lo
    empty = count == 0
    if agg is Aggregation.COUNT:
        return np.where(empty, np.nan, count.astype(np.float64))
    if agg in (Aggregation.SUM, Aggregation.MEAN):
        # prefix sums: exact enough for float32 features (relative error ~1e-15 x history)
        cs = np.concatenate([[0.0], np.cumsum(vals)])
        total = cs[hi] - cs[lo]
        if agg is Aggregation.SUM:
            return np.where(empty, np.nan, total)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(empty, np.nan, total / np.maximum(count, 1))
    if agg is Aggregation.LAST:
        return np.where(empty, np.nan, vals[np.maximum(hi - 1, 0)])
    # max/min over arbitrary [lo, hi) slices: reduceat over interleaved (lo, hi) indices;
    # a padding element keeps hi == len(vals) a valid index
    ufunc = np.maximum if agg is Aggregation.MAX else np.minimum
    padded = np.concatenate([vals, [0.0]])
    idx = np.empty(2 * len(lo), dtype=np.int64)
    idx[0::2] = np.minimum(lo, len(vals))
    idx[1::2] = hi
    red = ufunc.reduceat(padded, idx)[0::2]
    return np.where(empty, np.nan, red)


@dataclass
class MaterializeResult:
    views: list[str]
    start: datetime | None
    end: datetime


class FeastFeatureStore:
    """A Feast repository generated from the definitions, with its offline data.

    Thread-safe for the API: Feast calls that write (apply, materialize, data writes) are
    serialised by a lock.
    """

    def __init__(
        self,
        repo_dir: str | Path,
        *,
        views: Sequence[FeatureView] = VIEWS,
        schemas: Mapping[str, FeatureSchema] | None = None,
        online_store_url: str | None = None,
        project: str = PROJECT,
    ) -> None:
        os.environ.setdefault("FEAST_USAGE", "False")  # no telemetry from the control plane
        self.repo_dir = Path(repo_dir).resolve()
        self.offline_dir = self.repo_dir / "offline"
        self.offline_dir.mkdir(parents=True, exist_ok=True)
        (self.offline_dir / "readings").mkdir(exist_ok=True)
        self.project = project
        self.views: dict[str, FeatureView] = {v.name: v for v in views}
        self.schemas: dict[str, FeatureSchema] = dict(schemas if schemas is not None else SCHEMAS)
        self.online_store = online_store_config(online_store_url, self.repo_dir)
        self._lock = threading.RLock()
        self._store: Any = None
        self._applied = False
        self._write_yaml()
        for v in self._load_registered():
            self.views.setdefault(v.name, v)

    # ------------------------------------------------------------ repository
    def _repo_config(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "registry": str(self.repo_dir / "registry.db"),
            "provider": "local",
            "online_store": self.online_store,
            "offline_store": {"type": "file"},
            "entity_key_serialization_version": 3,
        }

    def _write_yaml(self) -> None:
        path = self.repo_dir / "feature_store.yaml"
        text = _feast_yaml(self._repo_config())
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    @property
    def store(self) -> Any:
        """The ``feast.FeatureStore`` (imported and built on first use)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from feast import FeatureStore
                    from feast.repo_config import RepoConfig

                    cfg = RepoConfig(repo_path=self.repo_dir, **self._repo_config())
                    self._store = FeatureStore(config=cfg)
        return self._store

    def source_path(self, view: FeatureView | str) -> Path:
        name = view if isinstance(view, str) else view.name
        return self.offline_dir / f"{name}.parquet"

    def feast_objects(self) -> list[Any]:
        """Entities, FileSources, FeatureViews and one FeatureService per schema."""
        from feast import Entity as FeastEntity
        from feast import FeatureService, Field, FileSource, ValueType
        from feast import FeatureView as FeastView
        from feast.types import Float32, Int64, String

        dtypes = {"float32": Float32, "int64": Int64, "string": String}
        used: dict[str, Entity] = {e.name: e for e in ENTITIES}
        for v in self.views.values():
            used.setdefault(v.entity.name, v.entity)
        entities = {
            name: FeastEntity(
                name=e.name,
                join_keys=[e.join_key],
                value_type=ValueType.STRING,
                description=e.description,
            )
            for name, e in used.items()
        }
        objs: list[Any] = list(entities.values())
        fviews = {}
        for v in self.views.values():
            self._ensure_source_file(v)
            src = FileSource(
                name=f"{v.name}_source",
                path=str(self.source_path(v)),
                timestamp_field="event_timestamp",
            )
            ttl = timedelta(seconds=_ttl_s(v))
            fv = FeastView(
                name=v.name,
                entities=[entities[v.entity.name]],
                ttl=ttl,
                schema=[Field(name=f.name, dtype=dtypes[f.dtype]) for f in v.features],
                source=src,
                online=True,
                description=v.description,
                tags={"farmiq_source": v.source.value, "window_s": str(v.window_s or "")},
            )
            fviews[v.name] = fv
            objs.append(fv)
        for s in self.schemas.values():
            objs.append(
                FeatureService(
                    name=s.name,
                    features=[
                        fviews[v.name][[r.feature.name for r in s.refs if r.view is v]]
                        for v in s.used_views
                    ],
                    tags={"version": s.version},
                    description=f"feature schema {s.name} {s.version}",
                )
            )
        return objs

    def apply(self) -> dict[str, Any]:
        """Register every entity, view and schema with Feast (idempotent), and write the same
        definitions as Python into the repository so the ``feast`` CLI agrees."""
        with self._lock:
            self.store.apply(self.feast_objects())
            self._write_python()
            self._applied = True
        return {
            "project": self.project,
            "views": sorted(self.views),
            "schemas": {s.name: s.version for s in self.schemas.values()},
        }

    def _write_python(self) -> None:
        path = self.repo_dir / REPO_PYTHON
        text = self.repo_python()
        if not path.exists() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def repo_python(self) -> str:
        """``feast_objects`` as the Python source of a Feast repository: ``feast plan`` on
        the repository then shows no change after the API applied (a test runs it)."""
        dtypes = {"float32": "Float32", "int64": "Int64", "string": "String"}
        used: dict[str, Entity] = {e.name: e for e in ENTITIES}
        for v in self.views.values():
            used.setdefault(v.entity.name, v.entity)
        lines = [
            '"""Feast definitions generated by farmiq (control_plane/feature_store.py) from',
            "farmiq/features and the views registered through the API. Do not edit: the",
            "control plane rewrites this file whenever it applies; change the definitions.",
            '"""',
            "",
            "from datetime import timedelta",
            "",
            "from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType",
            "from feast.types import Float32, Int64, String",
            "",
        ]
        for name, e in used.items():
            lines.append(
                f"entity_{name} = Entity(name={e.name!r}, join_keys=[{e.join_key!r}], "
                f"value_type=ValueType.STRING, description={e.description!r})"
            )
        for v in self.views.values():
            ttl = _ttl_s(v)
            fields = ", ".join(
                f"Field(name={f.name!r}, dtype={dtypes[f.dtype]})" for f in v.features
            )
            tags = {"farmiq_source": v.source.value, "window_s": str(v.window_s or "")}
            lines += [
                "",
                f"source_{v.name} = FileSource(name={v.name + '_source'!r}, "
                f"path={str(self.source_path(v))!r}, timestamp_field='event_timestamp')",
                f"view_{v.name} = FeatureView(",
                f"    name={v.name!r},",
                f"    entities=[entity_{v.entity.name}],",
                f"    ttl=timedelta(seconds={ttl!r}),",
                f"    schema=[{fields}],",
                f"    source=source_{v.name},",
                "    online=True,",
                f"    description={v.description!r},",
                f"    tags={tags!r},",
                ")",
            ]
        for sch in self.schemas.values():
            parts = ", ".join(
                f"view_{v.name}[{[r.feature.name for r in sch.refs if r.view is v]!r}]"
                for v in sch.used_views
            )
            lines += [
                "",
                f"service_{sch.name} = FeatureService(",
                f"    name={sch.name!r},",
                f"    features=[{parts}],",
                f"    tags={{'version': {sch.version!r}}},",
                f"    description={'feature schema ' + sch.name + ' ' + sch.version!r},",
                ")",
            ]
        return "\n".join(lines) + "\n"

    def ensure_applied(self) -> None:
        """Apply once per process (cheap after the first time; Feast import on first use)."""
        if not self._applied:
            self.apply()

    @property
    def _registered_path(self) -> Path:
        return self.repo_dir / "registered_views.json"

    def _load_registered(self) -> list[FeatureView]:
        if not self._registered_path.exists():
            return []
        return [FeatureView.from_dict(d) for d in json.loads(self._registered_path.read_text())]

    def register_views(self, views: Iterable[FeatureView]) -> dict[str, Any]:
        """Add views at run time (e.g. through the API), persist them, then apply.

        A view defined in farmiq.features cannot be replaced this way: the one definition
        wins, and gateways only serve what that module defines (see ``FeatureCache``).
        """
        new = list(views)
        with self._lock:
            builtin = {v.name for v in VIEWS}
            for v in new:
                if v.name in builtin and self.views[v.name] != v:
                    raise ValueError(
                        f"view {v.name!r} is defined in farmiq.features; edit it there"
                    )
            known = self.known_sensors()
            for v in new:
                unknown = sorted(set(v.sensors) - known)
                if unknown:
                    raise ValueError(
                        f"view {v.name!r}: unknown sensor(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(known))}"
                    )
            registered = {v.name: v for v in self._load_registered()}
            for v in new:
                if v.name not in builtin:
                    registered[v.name] = v
                if self.views.get(v.name) != v and v.source is SourceKind.SENSOR:
                    # aggregates over the readings already ingested, before Feast reads it
                    self.source_path(v).unlink(missing_ok=True)
                self.views[v.name] = v
            self._registered_path.write_text(
                json.dumps([v.to_dict() for v in registered.values()], indent=1)
            )
            raw = self.raw_readings()
            for v in new:
                if v.source is SourceKind.SENSOR and not self.source_path(v).exists():
                    compute_window_aggregates(raw, v).to_parquet(self.source_path(v), index=False)
            return self.apply()

    def known_sensors(self) -> set[str]:
        """Sensors a view may aggregate: those of the built-in views (what gateways report)
        and any sensor that readings have arrived for."""
        known = {s for v in VIEWS for s in v.sensors}
        parts = list((self.offline_dir / "readings").glob("*.parquet"))
        if parts:
            import pandas as pd

            for p in parts:
                known.update(pd.read_parquet(p, columns=["sensor"])["sensor"].unique().tolist())
        return known

    # ----------------------------------------------------------- offline data
    def _ensure_source_file(self, v: FeatureView) -> None:
        path = self.source_path(v)
        if path.exists():
            return
        import pandas as pd

        if v.source is SourceKind.SENSOR:
            df = compute_window_aggregates(pd.DataFrame(columns=list(READINGS_COLUMNS)), v)
        else:
            df = self._cloud_frame(v, [])
        df.to_parquet(path, index=False)

    def ingest_readings(self, readings: Iterable[Sequence[Any]]) -> int:
        """Append raw ``(entity_id, sensor, ts_seconds, value)`` readings and recompute the
        sensor views' aggregates. Returns the number of readings appended."""
        import numpy as np
        import pandas as pd

        rows = list(readings)
        if not rows:
            return 0
        df = pd.DataFrame(rows, columns=["entity_id", "sensor", "ts", "value"])
        out = pd.DataFrame(
            {
                "entity_id": df["entity_id"].astype(str),
                "sensor": df["sensor"].astype(str),
                # the same quantisation as the gateway: round to integer milliseconds
                "ts_ms": np.round(df["ts"].to_numpy(np.float64) * 1000).astype(np.int64),
                "value": df["value"].astype(np.float64),
            }
        )
        out = out[np.isfinite(out["value"].to_numpy())]
        with self._lock:
            out.to_parquet(
                self.offline_dir / "readings" / f"{uuid.uuid4().hex}.parquet", index=False
            )
            self.rebuild_aggregates()
        return len(out)

    def raw_readings(self) -> pd.DataFrame:
        import pandas as pd

        parts = sorted(
            (self.offline_dir / "readings").glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns
        )
        if not parts:
            return pd.DataFrame(columns=list(READINGS_COLUMNS))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def rebuild_aggregates(self) -> None:
        """Recompute every sensor view's change-point aggregates from the raw readings."""
        raw = self.raw_readings()
        with self._lock:
            for v in self.views.values():
                if v.source is SourceKind.SENSOR:
                    compute_window_aggregates(raw, v).to_parquet(self.source_path(v), index=False)

    def write_cloud_features(self, view: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append farm records to a cloud view: rows of ``{join_key: id, "event_ts": epoch
        seconds or datetime, <feature>: value}``."""
        import pandas as pd

        v = self.views[view]
        if v.source is not SourceKind.CLOUD:
            raise ValueError(f"{view} is not a cloud view")
        rows = list(rows)
        new = self._cloud_frame(v, rows)
        with self._lock:
            path = self.source_path(v)
            old = pd.read_parquet(path) if path.exists() else None
            df = new if old is None or old.empty else pd.concat([old, new], ignore_index=True)
            df.to_parquet(path, index=False)
        return len(new)

    @staticmethod
    def _cloud_frame(v: FeatureView, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        import pandas as pd

        key = v.entity.join_key
        for r in rows:
            unknown = set(r) - {key, "event_ts", *(f.name for f in v.features)}
            if unknown or key not in r or "event_ts" not in r:
                raise ValueError(f"{v.name}: bad row {dict(r)!r} (unknown or missing keys)")
        ts = [r["event_ts"] for r in rows]
        data: dict[str, Any] = {
            key: pd.Series([str(r[key]) for r in rows], dtype=object),
            "event_timestamp": pd.to_datetime(
                [t if isinstance(t, datetime) else round(float(t) * 1000) for t in ts],
                unit=None if ts and isinstance(ts[0], datetime) else "ms",
                utc=True,
            ),
        }
        pd_types = {"float32": "float32", "int64": "Int64", "string": "string"}
        for f in v.features:
            data[f.name] = pd.Series([r.get(f.name) for r in rows], dtype=pd_types[f.dtype])
        return pd.DataFrame(data)

    # ----------------------------------------------------------- materialize
    def materialize(
        self,
        end: datetime | None = None,
        start: datetime | None = None,
        views: Sequence[str] | None = None,
    ) -> MaterializeResult:
        """Load offline values into the online store: ``[start, end]``, or incrementally
        from each view's last materialization when ``start`` is None."""
        end = _utc(end or datetime.now(UTC))
        start = _utc(start) if start is not None else None
        if start is not None and start > end:
            # Feast would raise deep inside; say it here, in the operator's terms.
            raise ValueError(f"start {start.isoformat()} is after end {end.isoformat()}")
        names = list(views) if views else sorted(self.views)
        for n in names:
            if n not in self.views:
                raise KeyError(f"unknown feature view {n!r}")
        self.ensure_applied()
        with self._lock:
            if start is None:
                self.store.materialize_incremental(end_date=end, feature_views=names)
            else:
                self.store.materialize(start_date=start, end_date=end, feature_views=names)
        return MaterializeResult(names, start, end)

    # --------------------------------------------------------------- serving
    def _refs(self, features: FeatureSchema | str | Sequence[str]) -> list[str]:
        if isinstance(features, FeatureSchema):
            return list(features.features)
        if isinstance(features, str):
            return list(self.schemas[features].features)
        return list(features)

    def online_features(
        self,
        features: FeatureSchema | str | Sequence[str],
        entity_rows: Sequence[Mapping[str, str]],
    ) -> dict[str, list[Any]]:
        """Online values for entity rows, e.g. ``[{"barn_id": "b1", "flock_id": "f7"}]``;
        ``features`` is a schema (or its name) or ``view:feature`` references."""
        refs = self._refs(features)
        self.ensure_applied()
        return dict(
            self.store.get_online_features(
                features=refs, entity_rows=[dict(r) for r in entity_rows]
            ).to_dict()
        )

    def historical_features(
        self, features: FeatureSchema | str | Sequence[str], entity_df: pd.DataFrame
    ) -> pd.DataFrame:
        """Point-in-time features; ``entity_df`` has join keys and ``event_timestamp``.
        Rows come back in the order of ``entity_df``."""
        refs = self._refs(features)
        self.ensure_applied()
        df = entity_df.copy()
        df["_farmiq_row"] = range(len(df))
        out = self.store.get_historical_features(entity_df=df, features=refs).to_df()
        return out.sort_values("_farmiq_row").drop(columns="_farmiq_row").reset_index(drop=True)

    # --------------------------------------------------------------- catalog
    def describe(self) -> list[dict[str, Any]]:
        """Every feature with its view, entity, window, rule and the schemas using it."""
        out = []
        for v in self.views.values():
            for f in v.features:
                ref = f"{v.name}:{f.name}"
                d = f.to_dict()
                d.update(
                    ref=ref,
                    view=v.name,
                    entity=v.entity.name,
                    join_key=v.entity.join_key,
                    source=v.source.value,
                    window_s=v.window_s,
                    schemas=sorted(s.name for s in self.schemas.values() if ref in s.features),
                )
                out.append(d)
        return out

    def cloud_payload(
        self, entity_keys: Mapping[str, Sequence[str]], now: datetime | None = None
    ) -> bytes:
        """The ``down/features`` message for a gateway: the latest cloud-view values (as of
        ``now``, with their event times) for the given entity ids, e.g.
        ``{"flock_id": ["f7"]}`` (read by ``FeatureCache.apply_cloud_features``)."""
        views_out: dict[str, list[dict[str, Any]]] = {}
        now = now or datetime.now(UTC)
        for v in self.views.values():
            if v.source is not SourceKind.CLOUD:
                continue
            ids = list(entity_keys.get(v.entity.join_key, ()))
            if not ids:
                continue
            got = self._latest_cloud_rows(v, ids, now)
            if got:
                views_out[v.name] = got
        doc = {"kind": CLOUD_PAYLOAD_KIND, "generated_at": now.timestamp(), "views": views_out}
        return json.dumps(doc, separators=(",", ":")).encode()

    def _latest_cloud_rows(
        self, v: FeatureView, ids: list[str], now: datetime
    ) -> list[dict[str, Any]]:
        # Event times travel with the values so the gateway judges staleness itself; the
        # online store keeps the values, the offline source keeps their event times.
        import pandas as pd

        df = pd.read_parquet(self.source_path(v))
        key = v.entity.join_key
        df = df[df[key].isin(ids) & (df["event_timestamp"] <= pd.Timestamp(now))]
        df = df.sort_values("event_timestamp").groupby(key, sort=True).tail(1)
        rows = []
        for rec in df.to_dict("records"):
            values = {}
            for f in v.features:
                x = rec[f.name]
                values[f.name] = (
                    None
                    if pd.isna(x)
                    else (x if isinstance(x, str) else x.item() if hasattr(x, "item") else x)
                )
            rows.append(
                {
                    "entity_id": str(rec[key]),
                    "event_ts": rec["event_timestamp"].timestamp(),
                    "values": values,
                }
            )
        return rows


def publish_cloud_features(
    store: FeastFeatureStore,
    publisher: Any,
    gateway_id: str,
    entity_keys: Mapping[str, Sequence[str]],
    now: datetime | None = None,
) -> bytes:
    """Send a gateway the cloud-side features of its entities on ``down/features``.

    Retained, QoS 1: a gateway that was offline gets the latest values when it reconnects
    and caches them with their event times (TTL judged on the gateway).
    ``publisher`` has ``publish(topic, payload: bytes, qos=1, retain=False)``.
    """
    from farmiq import topics

    payload = store.cloud_payload(entity_keys, now)
    publisher.publish(topics.down(gateway_id, topics.FEATURES), payload, qos=1, retain=True)
    return payload


def _ttl_s(v: FeatureView) -> float:
    """The Feast TTL: a sensor view's window (it bounds the gap between change points); a
    cloud view's longest staleness TTL."""
    if v.source is SourceKind.SENSOR:
        return float(int(v.window_s or 0))
    return float(max(f.staleness_ttl_s for f in v.features))


def _utc(t: datetime) -> datetime:
    """A naive datetime from a request is read as UTC (comparing naive with aware raises)."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
