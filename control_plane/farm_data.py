"""Everything the control plane holds about one farm: export it, or erase it.

A farm's data is found by rule, not by a list of tables, so a table an area adds later is
covered the day it exists: every table of every area's metadata
(``control_plane.schema.all_metadata``) with a ``farm_id`` column (rows of the farm) or a
``device_id`` column (rows of the farm's gateways). Beyond those tables:

- retraining decisions name devices in their reasons and numbers: the farm's device ids
  are redacted (``<erased>``) in the database rows and in the ``decision.json`` of the
  MLflow runs, which are tagged ``farmiq.redacted_farms``;
- Feast: offline rows (cloud views and raw sensor readings) of the entities the farm's
  gateways reported (``entities`` in their state);
- the alerts this control plane keeps for the dashboard.

The learning loop's examples (labelled feedback, labels by entity, hard examples) are rows
of the farm's gateways in the learning area's own tables: exported and erased by the same
rule. Training runs already logged in MLflow keep their training CSV (rows carry no
gateway id, so the farm's rows cannot be told apart there).

The audit log is append-only by design (docs/security.md): its entries about the farm are
exported, not erased; the erasure itself is audited. Feast's online store keeps the last
materialized values of the erased entities until the next materialization of their views
overwrites or expires them (Feast has no per-entity delete).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

ERASED = "<erased>"
AUDIT_TABLE = "audit_log"
SKIP_TABLES = {AUDIT_TABLE, "alembic_version"}
RETRAINING_EXPERIMENT = "farmiq-retraining"


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes | bytearray | memoryview):
        raw = bytes(v)
        try:
            return json.loads(raw)  # e.g. a drift window as it was received
        except (ValueError, UnicodeDecodeError):
            return {"base64": base64.b64encode(raw).decode()}
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


class FarmData:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.engine: sa.Engine = ctx.engine

    # -- what belongs to the farm ---------------------------------------------------------------
    def _tables(self) -> Iterator[sa.Table]:
        # The learning area keeps its examples (labelled, by entity, hard) on its own
        # metadata, created only where a learning loop runs: covered by the same rule.
        from control_plane.learning import hard_examples
        from control_plane.schema import all_metadata

        existing = set(sa.inspect(self.engine).get_table_names())
        seen = set()
        for md in [*all_metadata(), hard_examples.LearningBase.metadata]:
            for t in md.sorted_tables:
                if t.name in existing and t.name not in seen and t.name not in SKIP_TABLES:
                    seen.add(t.name)
                    yield t

    def devices(self, farm: str) -> list[str]:
        from control_plane.tables import Device

        with self.ctx.session() as s:
            return sorted(s.scalars(sa.select(Device.device_id).where(Device.farm_id == farm)))

    @staticmethod
    def _where(t: sa.Table, farm: str, devices: list[str]) -> Any:
        conds = []
        if "farm_id" in t.c:
            conds.append(t.c.farm_id == farm)
        if "device_id" in t.c and devices:
            conds.append(t.c.device_id.in_(devices))
        return sa.or_(*conds) if conds else None

    def entities(self, farm: str) -> dict[str, set[str]]:
        from control_plane.tables import Device

        out: dict[str, set[str]] = {}
        with self.ctx.session() as s:
            for rep in s.scalars(sa.select(Device.reported).where(Device.farm_id == farm)):
                for key, ids in ((rep or {}).get("entities") or {}).items():
                    out.setdefault(str(key), set()).update(str(i) for i in ids or [])
        return out

    # -- export ---------------------------------------------------------------------------------
    def export(self, farm: str) -> dict[str, Any]:
        devices = self.devices(farm)
        tables: dict[str, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for t in self._tables():
                where = self._where(t, farm, devices)
                if where is None:
                    continue
                rows = conn.execute(sa.select(t).where(where)).mappings().all()
                if rows:
                    tables[t.name] = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
            tables[AUDIT_TABLE] = self._audit_rows(conn, farm, devices)
            decisions = self._decisions_naming(conn, devices)
            if decisions:
                tables["drift_retraining_decisions"] = decisions
        return {
            "farm": farm,
            "exported_at": time.time(),
            "devices": devices,
            "tables": tables,
            "features": self._feast_rows(farm),
            "mlflow_runs": self._mlflow_runs(devices),
            "alerts": self._alerts(farm),
        }

    def archive(self, farm: str) -> bytes:
        """A tar.gz: manifest.json, one JSON file per table, features.json, mlflow_runs.json."""
        doc = self.export(farm)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:

            def add(name: str, obj: Any) -> None:
                data = json.dumps(obj, indent=1, default=str).encode()
                info = tarfile.TarInfo(f"farm-{farm}/{name}")
                info.size, info.mtime = len(data), int(doc["exported_at"])
                tar.addfile(info, io.BytesIO(data))

            manifest = {
                "farm": farm,
                "exported_at": doc["exported_at"],
                "devices": doc["devices"],
                "tables": {k: len(v) for k, v in doc["tables"].items()},
                "features": {k: len(v) for k, v in doc["features"].items()},
                "mlflow_runs": len(doc["mlflow_runs"]),
                "alerts": len(doc["alerts"]),
            }
            add("manifest.json", manifest)
            for name, rows in doc["tables"].items():
                add(f"tables/{name}.json", rows)
            add("features.json", doc["features"])
            add("mlflow_runs.json", doc["mlflow_runs"])
            add("alerts.json", doc["alerts"])
        return buf.getvalue()

    def _audit_rows(self, conn: Any, farm: str, devices: list[str]) -> list[dict[str, Any]]:
        try:
            t = sa.Table(AUDIT_TABLE, sa.MetaData(), autoload_with=conn)
        except sa.exc.NoSuchTableError:
            return []
        needles = [farm, *devices]
        conds = [t.c.target.contains(n) for n in needles] + [
            t.c.detail.contains(n) for n in needles
        ]
        rows = conn.execute(sa.select(t).where(sa.or_(*conds)).order_by(t.c.id)).mappings().all()
        return [{k: _jsonable(v) for k, v in r.items()} for r in rows]

    @staticmethod
    def _mentions(doc: Any, devices: list[str]) -> bool:
        text = json.dumps(doc, default=str)
        return any(d in text for d in devices)

    def _decisions_naming(self, conn: Any, devices: list[str]) -> list[dict[str, Any]]:
        from control_plane.drift.tables import RetrainingDecisionRecord as R

        if not devices or R.__tablename__ not in sa.inspect(conn).get_table_names():
            return []
        rows = conn.execute(sa.select(R.__table__)).mappings().all()
        return [
            {k: _jsonable(v) for k, v in r.items()}
            for r in rows
            if self._mentions([r["reasons"], r["metrics"]], devices)
        ]

    def _feast_rows(self, farm: str) -> dict[str, list[dict[str, Any]]]:
        store = self.ctx.services.get("features")
        ents = self.entities(farm)
        if store is None or not ents:
            return {}
        ids = set().union(*ents.values())
        out: dict[str, list[dict[str, Any]]] = {}
        for name, frame in self._feast_frames(store):
            key = "entity_id" if "entity_id" in frame.columns else self._join_key(store, name)
            if key is None or key not in frame.columns:
                continue
            rows = frame[frame[key].astype(str).isin(ids)]
            if len(rows):
                out[name] = json.loads(rows.to_json(orient="records", date_format="iso"))
        return out

    @staticmethod
    def _join_key(store: Any, view: str) -> str | None:
        v = store.views.get(view)
        return v.entity.join_key if v is not None else None

    @staticmethod
    def _feast_frames(store: Any) -> Iterator[tuple[str, Any]]:
        import pandas as pd

        from control_plane.feature_store import SourceKind

        for name, v in store.views.items():
            path = store.source_path(v)
            if v.source is SourceKind.CLOUD and path.exists():
                yield name, pd.read_parquet(path)
        yield "readings", store.raw_readings()

    def _mlflow_runs(
        self, devices: list[str], *, redact: str | None = None
    ) -> list[dict[str, Any]]:
        """Retraining runs whose decision names a device of the farm; with ``redact`` (the
        farm), their decision.json is rewritten with the ids erased."""
        if not devices:
            return []
        client = self.ctx.mlflow
        exp = client.get_experiment_by_name(RETRAINING_EXPERIMENT)
        if exp is None:
            return []
        out = []
        for run in client.search_runs([exp.experiment_id], max_results=5000):
            rid = run.info.run_id
            try:
                doc = (
                    client.load_dict(rid, "decision.json") if hasattr(client, "load_dict") else None
                )
            except Exception:
                doc = None
            if doc is None:
                try:
                    import mlflow.artifacts

                    doc = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/decision.json")
                except Exception:
                    continue
            if not self._mentions(doc, devices):
                continue
            out.append({"run_id": rid, "decision": doc})
            if redact:
                text = json.dumps(doc)
                for d in devices:
                    text = text.replace(json.dumps(d)[1:-1], ERASED)
                client.log_dict(rid, json.loads(text), "decision.json")
                prev = run.data.tags.get("farmiq.redacted_farms", "")
                client.set_tag(rid, "farmiq.redacted_farms", (prev + " " + redact).strip())
        return out

    def _alerts(self, farm: str) -> list[dict[str, Any]]:
        bus = self.ctx.services.get("alerts")
        if bus is None or bus.recent is None:
            return []
        return list(bus.recent.latest(500, farm_id=farm))

    # -- erasure --------------------------------------------------------------------------------
    def erase(self, farm: str) -> dict[str, Any]:
        """Delete or redact everything held about ``farm``; returns what was done."""
        devices = self.devices(farm)
        entities = self.entities(farm)  # read before the devices' rows go
        report: dict[str, Any] = {"farm": farm, "devices": devices, "tables": {}}
        with self.engine.begin() as conn:
            # Children before parents (reverse dependency order).
            for t in reversed(list(self._tables())):
                where = self._where(t, farm, devices)
                if where is None:
                    continue
                n = conn.execute(sa.delete(t).where(where)).rowcount
                if n:
                    report["tables"][t.name] = int(n)
            redacted = self._redact_decisions(conn, devices)
            if redacted:
                report["redacted"] = {"drift_retraining_decisions": redacted}
        report["features"] = self._erase_feast(entities)
        try:
            runs = self._mlflow_runs(devices, redact=farm)
        except Exception as exc:  # the database part is done; say what is left
            log.exception("redacting MLflow runs for farm %s failed", farm)
            report["mlflow_error"] = str(exc)
            runs = []
        report["mlflow_runs_redacted"] = [r["run_id"] for r in runs]
        bus = self.ctx.services.get("alerts")
        if bus is not None and bus.recent is not None:
            report["alerts"] = bus.recent.erase_farm(farm)
        report["kept"] = {AUDIT_TABLE: "append-only security log; this erasure is recorded"}
        return report

    def _redact_decisions(self, conn: Any, devices: list[str]) -> int:
        from control_plane.drift.tables import RetrainingDecisionRecord as R

        n = 0
        for r in self._decisions_naming(conn, devices):
            text = json.dumps({"reasons": r["reasons"], "metrics": r["metrics"]})
            for d in devices:
                text = text.replace(json.dumps(d)[1:-1], ERASED)
            doc = json.loads(text)
            conn.execute(
                sa.update(R)
                .where(R.id == r["id"])
                .values(reasons=doc["reasons"], metrics=doc["metrics"])
            )
            n += 1
        return n

    def _erase_feast(self, ents: dict[str, set[str]]) -> dict[str, int]:
        store = self.ctx.services.get("features")
        if store is None or not ents:
            return {}
        import pandas as pd

        from control_plane.feature_store import SourceKind

        ids = set().union(*ents.values())
        out: dict[str, int] = {}
        with store._lock:
            for name, v in store.views.items():
                path = store.source_path(v)
                if v.source is not SourceKind.CLOUD or not path.exists():
                    continue
                df = pd.read_parquet(path)
                keep = ~df[v.entity.join_key].astype(str).isin(ids)
                if (~keep).sum():
                    out[name] = int((~keep).sum())
                    df[keep].to_parquet(path, index=False)
            removed = 0
            for part in (store.offline_dir / "readings").glob("*.parquet"):
                df = pd.read_parquet(part)
                keep = ~df["entity_id"].astype(str).isin(ids)
                if (~keep).sum():
                    removed += int((~keep).sum())
                    df[keep].to_parquet(part, index=False)
            if removed:
                out["readings"] = removed
                store.rebuild_aggregates()
        return out
