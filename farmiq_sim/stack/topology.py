"""The production topology, defined once: each part's program and arguments.

``farmiq stack`` runs these as local processes; deploy/docker-compose.yml and deploy/k8s
run the same programs with the same arguments in containers (tests/ops/
test_deploy_manifests.py compares them with these functions, called with the in-cluster
host names, ports and paths). So what the acceptance test proves on the stack is what the
manifests deploy.

| part            | program                                         | state                    |
|-----------------|-------------------------------------------------|--------------------------|
| postgres        | PostgreSQL 16                                   | control-plane + MLflow DBs |
| mlflow          | ``mlflow server --serve-artifacts``             | artifacts volume         |
| openbao         | ``bao server`` (transit engine: signing keys)   | its own storage          |
| mosquitto       | mosquitto, mutual TLS, per-gateway ACL          | persistence volume       |
| control-plane   | ``farmiq control-plane serve`` (2 replicas)     | shared bundle/Feast store |
| triton          | ``tritonserver --model-control-mode=explicit``  | none (models sent by API) |
| rabbitmq        | RabbitMQ (alerts)                               | its own                  |
"""

from __future__ import annotations

MLFLOW_MAJOR = 3  # the server must be the client's major version (NOTES.md)
MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
OPENBAO_IMAGE = "quay.io/openbao/openbao:2.4.1"
TRANSIT_KEYS = ("farmiq-bundle-1", "farmiq-bundle-2")  # threshold signing: both must sign
SIGNING_THRESHOLD = 2
MQTT_TLS_PORT = 8883


def mlflow_args(host: str, port: int, backend_store_uri: str, artifacts: str) -> list[str]:
    return [
        "mlflow", "server", "--host", host, "--port", str(port),
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts, "--serve-artifacts",
        "--workers", "1",
    ]  # fmt: skip


def triton_args(repository: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Explicit model control and an empty repository: every model arrives through the
    repository API's load request (config + files), so nothing is shared with the
    control plane."""
    return [
        "tritonserver", f"--model-repository={repository}", "--model-control-mode=explicit",
        "--strict-model-config=false", "--log-verbose=0", *extra,
    ]  # fmt: skip


def control_plane_args(config: str | None = None) -> list[str]:
    return ["farmiq", "control-plane", "serve", *(["-c", config] if config else [])]


def mosquitto_args(config: str) -> list[str]:
    return ["mosquitto", "-c", config]


def openbao_dev_args(listen: str, root_token: str) -> list[str]:
    """The local stack's KMS (in memory, self-unsealed); production runs ``bao server
    -config`` with storage, see deploy/."""
    return ["bao", "server", "-dev", f"-dev-root-token-id={root_token}",
            f"-dev-listen-address={listen}", "-log-level=warn"]  # fmt: skip
