"""The hard examples gateways kept, waiting for a label: Sedna-style hard-example mining.

A gateway keeps an input its model was unsure about when the cloud could not be asked
(edge_agent/inference/escalation_store.py) and uploads it on ``up/hard_examples`` through
its outbox (edge_agent/telemetry/hard_example_upload.py). Here each is stored once (by
device and entry id) with the gateway's answer confidence, listed for labelling
(``GET /api/v1/learning/hard-examples/{model}``, least confident first), and a label
(``POST .../labels``) turns it into a labelled example of the learning loop's training
data (control_plane/learning/examples.py), at the time the gateway saw it, so it belongs to
that period's retraining.

Own table in the learning area's metadata, like the labelled examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.learning.examples import (
    ExampleError,
    ExampleStore,
    LearningBase,
    add_new,
    read_batch,
)

HARD_EXAMPLES = "hard_examples"  # up/hard_examples


class HardExample(LearningBase):
    __tablename__ = "learning_hard_examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # device / entry id
    model: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ts: Mapped[float] = mapped_column(Float)
    features: Mapped[list[float]] = mapped_column(JSON)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    __table_args__ = (Index("ix_learning_hard_examples_model", "model", "labelled"),)


class HardExampleStore:
    def __init__(self, examples: ExampleStore) -> None:
        self.examples = examples  # where a labelled one goes; shares its engine

    def create_tables(self) -> None:
        self.examples.create_tables()

    def ingest(self, device_id: str, payload: bytes | Mapping[str, Any]) -> int:
        """Store a gateway's batch; returns how many were new. ``ExampleError`` (the whole
        batch refused) on anything malformed."""
        model, items = read_batch(payload, "hard-example")
        rows = []
        for it in items:
            try:
                feats = [float(x) for x in it["inputs"]]
                ts = float(it["ts"])
                entry = str(it["id"])[:120]
                conf = it.get("confidence")
                conf = None if conf is None else float(conf)
                version = it.get("version")
                version = None if version is None else int(version)
            except (KeyError, TypeError, ValueError) as exc:
                raise ExampleError(f"each hard example needs id, ts and inputs: {exc}") from None
            if not feats or not all(map(math.isfinite, feats)) or not math.isfinite(ts):
                raise ExampleError("hard-example inputs and ts must be finite numbers")
            rows.append(HardExample(
                key=f"{device_id}/{entry}", model=model, device_id=device_id,
                version=version, ts=ts, features=feats, confidence=conf,
                reason=str(it.get("reason", ""))[:200],
            ))  # fmt: skip
        with self.examples.session() as s, s.begin():
            return add_new(s, HardExample, rows)

    def pending(self, model: str, limit: int = 100) -> list[dict[str, Any]]:
        """Unlabelled hard examples of a model, least confident first."""
        stmt = (
            select(HardExample)
            .where(HardExample.model == model, HardExample.labelled.is_(False))
            .order_by(HardExample.confidence.is_(None), HardExample.confidence, HardExample.ts)
            .limit(limit)
        )
        with self.examples.session() as s:
            return [
                {"id": r.id, "device_id": r.device_id, "version": r.version, "ts": r.ts,
                 "inputs": r.features, "confidence": r.confidence, "reason": r.reason}
                for r in s.scalars(stmt)
            ]  # fmt: skip

    def counts(self, model: str) -> dict[str, int]:
        with self.examples.session() as s:
            rows = s.execute(
                select(HardExample.labelled, func.count())
                .where(HardExample.model == model)
                .group_by(HardExample.labelled)
            ).all()
        got = {bool(k): int(n) for k, n in rows}
        return {"pending": got.get(False, 0), "labelled": got.get(True, 0)}

    def label(self, model: str, labels: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Label hard examples by id: each becomes a labelled example at its own time."""
        wanted: dict[int, str] = {}
        for item in labels:
            try:
                wanted[int(item["id"])] = str(item["truth"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ExampleError(f"each label needs an id and a truth: {exc}") from None
        with self.examples.session() as s:
            recs = list(s.scalars(select(HardExample).where(
                HardExample.model == model, HardExample.id.in_(list(wanted))
            )))  # fmt: skip
        by_device: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            by_device.setdefault(r.device_id, []).append(
                {"ts": r.ts, "inputs": r.features, "truth": wanted[r.id]}
            )
        # stored first (idempotent by content), marked after: a failure in between leaves
        # the example pending, never marked and lost
        stored = sum(
            self.examples.ingest(device, {"model": model, "examples": items})
            for device, items in by_device.items()
        )
        with self.examples.session() as s, s.begin():
            for r in s.scalars(select(HardExample).where(HardExample.id.in_([x.id for x in recs]))):
                r.labelled, r.label = True, wanted[r.id]
        found = {r.id for r in recs}
        return {"labelled": len(found), "stored": stored,
                "unknown": sorted(set(wanted) - found)}  # fmt: skip
