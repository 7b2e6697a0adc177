"""Control-plane settings (``farmiq-cp.toml`` + ``FARMIQ_CP__...`` overrides).

Embedded defaults run everything on one machine: SQLite for the control plane and for
MLflow, artifacts and bundles in a local folder, Mosquitto on localhost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from farmiq.config import load_config

ENV_PREFIX = "FARMIQ_CP"


class CpMqtt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_id: str = "farmiq-control-plane"
    # Replicas share one group so each fleet message is processed once. Sessions are clean:
    # a departed replica must not keep a share of the fleet's messages queued for itself.
    share_group: str = "farmiq-cp"
    shared_subscription: bool = True  # off only for brokers without $share (the demo's amqtt)
    protocol: Literal["5", "3.1.1"] = "5"  # "3.1.1" for brokers without MQTT 5 (amqtt)
    enabled: bool = True


class CpSigning(BaseModel):
    """Where the bundle-signing keys live (control_plane/signing, docs/security.md)."""

    model_config = ConfigDict(extra="forbid")
    # "file": Ed25519 PEM files (``signing_keys``); "vault": a Vault / OpenBao transit
    # engine, so no private key is on the control plane's disk.
    backend: Literal["file", "vault"] = "file"
    vault_url: str | None = None  # e.g. "http://openbao:8200"
    vault_token: str | None = None  # prefer vault_token_file or VAULT_TOKEN
    vault_token_file: Path | None = None
    transit_mount: str = "transit"
    keys: list[str] = Field(default=["farmiq-bundle-1"], min_length=1)  # transit key names
    threshold: int = Field(default=1, ge=1)  # signatures a gateway requires


class CpAlerts(BaseModel):
    """Where operator alerts go besides MQTT (control_plane/alerts, docs/alerts.md)."""

    model_config = ConfigDict(extra="forbid")
    amqp_url: str | None = None  # amqp://user:pw@host:5672/vhost; None = no RabbitMQ
    exchange: str = "farmiq.alerts"  # durable topic exchange, routing key <kind>.<severity>
    webhook_url: str | None = None  # HMAC-signed POST of every alert
    # The webhooks' HMAC secret; default: made once under data_dir/keys/webhook-secret.
    webhook_secret: str | None = None


class ControlPlaneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Path(".farmiq/control-plane")
    database_url: str | None = None  # default: sqlite under data_dir
    mlflow_tracking_uri: str | None = None  # default: sqlite under data_dir
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    signing_keys: list[Path] = []  # file backend; default: one key under data_dir/keys
    signing: CpSigning = CpSigning()
    bundle_expiry_days: int = Field(default=90, ge=1)
    triton_url: str | None = None
    # Where to also export the model repository entries Triton is sent (Triton itself gets
    # the files in its repository API's load request, so it needs no shared volume).
    triton_repository: Path | None = None
    # "onnxruntime_onnx": NVIDIA's Triton container; "python": the CPU-only tritonserver of
    # the nvidia-pytriton wheel (python backend only), as `farmiq stack` runs it.
    triton_variant: Literal["onnxruntime_onnx", "python"] | None = None
    mqtt: CpMqtt = CpMqtt()
    alerts: CpAlerts = CpAlerts()
    # Operator API security (control_plane/security, docs/security.md): API keys with roles
    # on every /api/v1 endpoint, lock-out after repeated failed keys. On by default; only
    # `farmiq control-plane serve --insecure` (warned at every start) turns it off.
    auth_enabled: bool = True
    # Feast online store URL (sqlite://, postgresql://, redis://); default SQLite (docs/features.md)
    feature_online_store: str | None = None
    auth_max_failures: int = Field(default=5, ge=1)
    auth_lockout_s: float = Field(default=60.0, gt=0)
    # Fleet directory from `farmiq provision init-fleet`: enables the enrollment API and
    # keeps revoked devices from receiving bundles.
    fleet_dir: Path | None = None
    # With a fleet: an API revocation rewrites this broker ACL (`topic deny #` for revoked
    # devices) and runs this command (e.g. ["systemctl", "reload", "mosquitto"]) so the
    # device's live session loses access at once (docs/security.md).
    broker_acl: Path | None = None
    broker_reload_cmd: list[str] = []

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'control-plane.db').resolve()}"

    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"


def load_settings(path: str | Path | None = None, **overrides: object) -> ControlPlaneSettings:
    return load_config(
        ControlPlaneSettings, path, env_prefix=ENV_PREFIX, overrides=overrides or None
    )


def database_url_for_cli(db: str | None, config: str | None, prog: str) -> str | None:
    """The database a CLI command works on: ``--db``, else the one the control plane's
    config names. None after printing one line when the config is refused."""
    if db:
        return db
    import sys

    from farmiq.config import ConfigError

    try:
        return load_settings(config).resolved_database_url()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
