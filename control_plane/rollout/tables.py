"""Rollout tables. Everything a rollout needs to continue lives here, so a control plane
that restarts in the middle of a wave picks up exactly where it stopped."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db import Base


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(Integer)
    bundle_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    targeting: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gates: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rate_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    max_concurrent: Mapped[int] = mapped_column(Integer, default=50)
    soak_s: Mapped[float] = mapped_column(Float, default=60.0)
    wave_timeout_s: Mapped[float] = mapped_column(Float, default=600.0)
    on_gate_failure: Mapped[str] = mapped_column(String(8), default="pause")  # pause|abort
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    rollback_bundles: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict
    )  # from-version -> id
    # The creating request's W3C traceparent (tracing on): each step continues that trace.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class RolloutWave(Base):
    __tablename__ = "rollout_waves"
    __table_args__ = (UniqueConstraint("rollout_id", "index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), index=True)
    index: Mapped[int] = mapped_column(Integer)
    percent: Mapped[float] = mapped_column(Float)
    mode: Mapped[str] = mapped_column(String(8), default="install")  # install|shadow
    status: Mapped[str] = mapped_column(String(16), default="pending")
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    soak_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    gate_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class RolloutDevice(Base):
    """One device in one rollout: which wave, and how far it got."""

    __tablename__ = "rollout_devices"
    __table_args__ = (UniqueConstraint("rollout_id", "device_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), index=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    wave: Mapped[int] = mapped_column(Integer)
    # pending|sent|installed|failed|skipped|rolling_back|rolled_back
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class DesiredState(Base):
    """The retained ``down/desired`` document of one device (rev grows by one per change)."""

    __tablename__ = "desired_state"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    doc: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rev: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class DeviceHealth(Base):
    """The latest ``up/health`` and ``up/shadow`` reports of one device."""

    __tablename__ = "device_health"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shadow: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    transfer: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class RolloutEvent(Base):
    """Append-only history: who (which replica) did what to a rollout, and when."""

    __tablename__ = "rollout_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rollout_id: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[float] = mapped_column(Float, default=time.time)
    replica: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
