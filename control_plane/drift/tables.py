"""Drift tables: references, gateway windows, concept-drift events, retraining decisions."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db import Base


class DriftReference(Base):
    """The baseline of a model version ("*": any version without its own)."""

    __tablename__ = "drift_references"
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    schema: Mapped[str] = mapped_column(String(32))
    reference: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class DriftWindow(Base):
    """One gateway window. Histogram columns are flat little-endian arrays over the
    reference's columns in order (features, then the prediction), so a fleet's windows
    stack into one matrix without parsing JSON again."""

    __tablename__ = "drift_windows"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    farm_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    schema: Mapped[str] = mapped_column(String(32))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    counts: Mapped[bytes] = mapped_column(LargeBinary)  # int64 [slots]
    missing: Mapped[bytes] = mapped_column(LargeBinary)  # int64 [columns]
    invalid: Mapped[bytes] = mapped_column(LargeBinary)  # int64 [columns]
    mins: Mapped[bytes] = mapped_column(LargeBinary)  # float64 [columns], NaN when empty
    maxs: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the window JSON as received
    received: Mapped[float] = mapped_column(Float, default=time.time)
    # The label-free expected accuracy (farmiq/cbpe.py): rows with calibrated
    # probabilities, the sum of their P(correct) and of its Bernoulli variance.
    est_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    est_sum: Mapped[float | None] = mapped_column(Float, nullable=True)
    est_var: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_drift_windows_model_end", "model", "end"),)


class ConceptEvent(Base):
    """A DDM/ADWIN state change reported by a gateway."""

    __tablename__ = "drift_concept_events"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128), index=True)
    detector: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    n_seen: Mapped[int] = mapped_column(Integer)
    estimate: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float, index=True)


class RetrainingDecisionRecord(Base):
    """Every retraining decision, with the reasons and numbers behind it."""

    __tablename__ = "drift_retraining_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    at: Mapped[float] = mapped_column(Float)
    retrain: Mapped[bool] = mapped_column(Boolean)
    triggered: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    window_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_end: Mapped[float | None] = mapped_column(Float, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hook_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RetrainingPolicyState(Base):
    """Hysteresis and cooldown memory of the policy, per model."""

    __tablename__ = "drift_policy_state"
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    consecutive: Mapped[int] = mapped_column(Integer, default=0)
    latched: Mapped[bool] = mapped_column(Boolean, default=False)
    last_trigger_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_window_end: Mapped[float | None] = mapped_column(Float, nullable=True)


class IngestReject(Base):
    """Windows that could not be used (bad payload, device mismatch): kept for operators."""

    __tablename__ = "drift_ingest_rejects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float, default=time.time)
