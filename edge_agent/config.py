"""Agent configuration (``/etc/farmiq/agent.toml`` + ``FARMIQ_AGENT__...`` overrides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from farmiq.config import load_config

ENV_PREFIX = "FARMIQ_AGENT"
DEFAULT_PATH = Path("/etc/farmiq/agent.toml")


class MqttSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    # MQTT 5 carries trace context in user properties; "3.1.1" for brokers without it
    # (the demo's embedded amqtt). farmiq/mqtt_client.py.
    protocol: Literal["5", "3.1.1"] = "5"


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=8571, ge=0, le=65535)


class CloudSettings(BaseModel):
    """Where the cloud Triton (KServe v2) lives, for escalation and offload."""

    model_config = ConfigDict(extra="forbid")
    triton_url: str | None = None  # e.g. "http://triton.example:8000" or "grpc://host:8001"
    serverless_url: str | None = None
    timeout_ms: float = Field(default=200.0, gt=0)


class InferenceSettings(BaseModel):
    """The hybrid router's knobs (per-model choices live in each bundle's ``serving``)."""

    model_config = ConfigDict(extra="forbid")
    cache_size: int = Field(default=1024, ge=0)  # 0 turns the result cache off
    cache_ttl_s: float = Field(default=30.0, ge=0)
    breaker_failures: int = Field(default=3, ge=1)  # consecutive link failures that open it
    breaker_reset_s: float = Field(default=5.0, gt=0)  # open this long, then one probe
    inline_max_us: float = Field(default=300.0, ge=0)  # faster models skip the batcher
    serverless_cost: float = Field(default=2.0, ge=0)  # relative to cloud Triton = 1
    serverless_cold_start_ms: float = Field(default=250.0, ge=0)
    escalation_max_entries: int = Field(default=10_000, ge=1)
    escalation_max_mb: float = Field(default=64.0, gt=0)
    # The most one request waits for an MCU before falling back to the next target: a hung
    # MCU costs at most this (or less, when the request's latency budget is tighter).
    mcu_deadline_ms: float = Field(default=250.0, gt=0)


class RolloutAgentSettings(BaseModel):
    """Fleet rollouts on the gateway: chunked transfers, probation, shadow, health."""

    model_config = ConfigDict(extra="forbid")
    chunk_window: int = Field(default=4, ge=1, le=64)  # chunks requested at a time
    chunk_timeout_s: float = Field(default=5.0, gt=0)  # ask again for chunks not seen by then
    byte_budget: int | None = Field(default=None, ge=0)  # bytes per period on this link
    budget_period_s: float = Field(default=86400.0, gt=0)
    probation_s: float = Field(default=2.0, ge=0)  # health-check again this long after install
    probation_max_error_rate: float = Field(default=0.2, ge=0, le=1)
    health_interval_s: float = Field(default=30.0, gt=0)
    shadow_report_s: float = Field(default=5.0, gt=0)


class DriftSettings(BaseModel):
    """Drift statistics windows (docs/drift.md) and the durable outbox that carries them."""

    model_config = ConfigDict(extra="forbid")
    window_s: float = Field(default=3600.0, gt=0)
    # Raw sample rows per window, only where the farm opted in to sending them (0: none,
    # the default; the control plane also drops raw rows of farms not on its opt-in list).
    reservoir_size: int = Field(default=0, ge=0, le=100_000)
    # The KLL quantile sketches' k (farmiq/quantile_sketch.py): rank error ~1.3 % at 200.
    sketch_k: int = Field(default=200, ge=8, le=1024)  # 1024: ~0.3 %, ~16 KB a column
    outbox_budget_mb: float = Field(default=64.0, gt=0)
    outbox_ack_timeout_s: float = Field(default=30.0, gt=0)
    # The open windows are written to the state dir this often, so a power cut or kill -9
    # loses at most this much of the statistics (0: no checkpoint).
    checkpoint_s: float = Field(default=60.0, ge=0)
    # The hard examples the cascade kept go to the cloud for labelling this often, through
    # the outbox (edge_agent/telemetry/hard_example_upload.py; 0: they stay on the gateway).
    hard_example_upload_s: float = Field(default=60.0, ge=0)


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str
    farm_id: str = "default"
    hardware_class: str = "generic-linux"
    tags: list[str] = []
    state_dir: Path = Path("/var/lib/farmiq")
    trust_root: Path = Path("/etc/farmiq/trust_root.json")
    max_bundle_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    intra_op_threads: int = Field(default=1, ge=1, le=64)
    mqtt: MqttSettings = MqttSettings()
    api: ApiSettings = ApiSettings()
    cloud: CloudSettings = CloudSettings()
    rollout: RolloutAgentSettings = RolloutAgentSettings()
    inference: InferenceSettings = InferenceSettings()
    drift: DriftSettings = DriftSettings()
    barn_id: str = "barn-1"  # the barn entity this gateway's MCU sensors belong to
    flock_ids: list[str] = []  # flocks in the barn: the control plane sends their features
    mcu_ports: list[str] = []  # serial URLs: /dev/serial/by-id/..., socket://, loop://

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", v):
            raise ValueError("device ids are letters, digits, '_', '.', '-' (at most 64)")
        return v


def load_agent_config(path: str | Path | None = None, **overrides: object) -> AgentConfig:
    return load_config(AgentConfig, path, env_prefix=ENV_PREFIX, overrides=overrides or None)
