"""Labelled examples the fleet collected, stored per model so a retraining can train on
the drift period: gateway feedback with the feature vector it was predicted on
(``inputs``), or, for a model served by entity (``{"barn_id": ..., "flock_id": ...}``),
with the entity and the time: its features then come from the Feast offline store as
they were at that time (control_plane/learning/feast_source.py).

Own tables (own metadata, created by ``create_tables``): the learning area is optional and
needs no migration of the control plane's schema.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import JSON, Float, Index, Integer, String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

MAX_BATCH = 10_000


class LearningBase(DeclarativeBase):
    pass


class LabelledExample(LearningBase):
    __tablename__ = "learning_labelled_examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # idempotent re-delivery
    model: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float)
    features: Mapped[list[float]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(128))
    __table_args__ = (Index("ix_learning_examples_model_ts", "model", "ts"),)


class EntityExample(LearningBase):
    """A label for what an entity-keyed model answered about ``entity`` at ``ts``."""

    __tablename__ = "learning_entity_examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float)
    entity: Mapped[dict[str, str]] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(128))
    __table_args__ = (Index("ix_learning_entity_examples_model_ts", "model", "ts"),)


MAX_ENTITY_KEYS = 8


class ExampleError(ValueError):
    pass


def read_batch(payload: bytes | Mapping[str, Any], what: str) -> tuple[str, list[Any]]:
    """(model, items) of a gateway's batch: an object with a ``model`` and 1..MAX_BATCH
    ``examples``; ``ExampleError`` otherwise."""
    doc = json.loads(payload) if isinstance(payload, bytes | str) else dict(payload)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        raise ExampleError(f"a {what} batch is an object with a 'model'")
    items = doc.get("examples")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ExampleError(f"'examples' must be a list of 1..{MAX_BATCH} objects")
    return str(doc["model"]), items


def add_new(s: Session, table: Any, rows: list[Any]) -> int:
    """Add the ORM ``rows`` whose ``key`` the table does not hold yet; how many were new."""
    if not rows:
        return 0
    have = set(s.scalars(select(table.key).where(table.key.in_([r.key for r in rows]))))
    fresh = []
    for r in rows:
        if r.key not in have:
            have.add(r.key)
            fresh.append(r)
    s.add_all(fresh)
    return len(fresh)


def in_period(stmt: Any, table: Any, since: float | None, until: float | None) -> Any:
    if since is not None:
        stmt = stmt.where(table.ts >= since)
    if until is not None:
        stmt = stmt.where(table.ts <= until)
    return stmt.order_by(table.ts, table.id)


class ExampleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_tables(self) -> None:
        LearningBase.metadata.create_all(self.engine)

    def session(self) -> Session:
        return self._sessions()

    def ingest(self, device_id: str, payload: bytes | Mapping[str, Any]) -> int:
        """``{"type": "feedback_batch", "model": m, "examples": [{"ts", "inputs": [...],
        "truth": label}, ...]}`` (or ``"entity": {join key: id}`` instead of ``inputs``);
        returns how many examples were new. Refuses the whole batch (``ExampleError``) on
        any malformed example."""
        model, items = read_batch(payload, "feedback")
        rows: list[LabelledExample] = []
        entity_rows: list[EntityExample] = []
        for it in items:
            if isinstance(it, dict) and "entity" in it and "inputs" not in it:
                entity_rows.append(self._entity_row(model, device_id, it))
                continue
            try:
                feats = [float(x) for x in it["inputs"]]
                ts = float(it["ts"])
                label = str(it["truth"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ExampleError(f"each example needs ts, inputs and truth: {exc}") from None
            if not feats or not all(math.isfinite(x) for x in feats) or not math.isfinite(ts):
                raise ExampleError("example inputs and ts must be finite numbers")
            key = hashlib.sha256(json.dumps([model, device_id, ts, feats, label]).encode())
            rows.append(LabelledExample(key=key.hexdigest(), model=model, device_id=device_id,
                                        ts=ts, features=feats, label=label))  # fmt: skip
        with self.session() as s, s.begin():
            return add_new(s, LabelledExample, rows) + add_new(s, EntityExample, entity_rows)

    @staticmethod
    def _entity_row(model: str, device_id: str, it: Mapping[str, Any]) -> EntityExample:
        ent = it.get("entity")
        if (
            not isinstance(ent, dict)
            or not 0 < len(ent) <= MAX_ENTITY_KEYS
            or not all(isinstance(k, str) and isinstance(v, str) and 0 < len(v) <= 128
                       for k, v in ent.items())
        ):  # fmt: skip
            raise ExampleError("an example's 'entity' maps join keys to ids (strings)")
        try:
            ts, label = float(it["ts"]), str(it["truth"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExampleError(f"each example needs ts and truth: {exc}") from None
        if not math.isfinite(ts):
            raise ExampleError("example ts must be a finite number")
        key = hashlib.sha256(
            json.dumps([model, device_id, ts, sorted(ent.items()), label]).encode()
        ).hexdigest()
        return EntityExample(key=key, model=model, device_id=device_id, ts=ts, entity=dict(ent),
                             label=label)  # fmt: skip

    def entity_window(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
        """(entities, labels [n], timestamps [n]) of the period's entity examples."""
        stmt = select(EntityExample).where(EntityExample.model == model)
        with self.session() as s:
            recs = list(s.scalars(in_period(stmt, EntityExample, since, until)))
        return (
            [dict(r.entity) for r in recs],
            np.asarray([r.label for r in recs], dtype=object),
            np.asarray([r.ts for r in recs], dtype=np.float64),
        )

    def window(
        self,
        model: str,
        since: float | None = None,
        until: float | None = None,
        devices: list[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features [n, f], labels [n], timestamps [n]) of the period (of ``devices``
        only, when given), in time order."""
        stmt = select(LabelledExample).where(LabelledExample.model == model)
        if devices is not None:
            stmt = stmt.where(LabelledExample.device_id.in_(devices))
        with self.session() as s:
            recs = list(s.scalars(in_period(stmt, LabelledExample, since, until)))
        if not recs:
            return np.zeros((0, 0), np.float32), np.zeros(0, object), np.zeros(0, np.float64)
        widths = {len(r.features) for r in recs}
        if len(widths) > 1:
            width = max(widths, key=lambda w: sum(len(r.features) == w for r in recs))
            recs = [r for r in recs if len(r.features) == width]
        X = np.asarray([r.features for r in recs], dtype=np.float32).reshape(len(recs), -1)
        y = np.asarray([r.label for r in recs], dtype=object)
        return X, y, np.asarray([r.ts for r in recs], dtype=np.float64)


def now() -> float:
    return time.time()
