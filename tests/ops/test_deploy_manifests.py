"""The cloud deployment files agree with the code: images, ports, env, probes.

No container engine or cluster runs here, so these read docker-compose.yml, the kustomize
tree and the Dockerfile, and check them against the real settings model and the real
FastAPI routes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from control_plane.settings import ENV_PREFIX, ControlPlaneSettings
from farmiq.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERVICES = {"control-plane", "postgres", "mosquitto", "mlflow", "triton"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        path = DEPLOY / "k8s" / res
        assert path.exists(), f"kustomization lists a missing file: {res}"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.fixture(scope="module")
def routes() -> set[str]:
    from control_plane.app import create_app

    # The OpenAPI schema lists every route the included routers serve.
    return set(create_app(ControlPlaneSettings()).openapi()["paths"])


def _image_pinned(image: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag, f"unpinned image {image}"


def _settings_from_env(env: dict[str, str]) -> ControlPlaneSettings:
    return load_config(ControlPlaneSettings, env_prefix=ENV_PREFIX, environ=env)


def _workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def test_compose_has_the_cloud_stack_with_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        _image_pinned(svc["image"])
        assert svc.get("restart") == "unless-stopped", name
    gpu = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_compose_control_plane_env_is_valid_and_points_at_real_services(
    compose: dict[str, Any], routes: set[str]
) -> None:
    services = compose["services"]
    cp = services["control-plane"]
    env = {k: str(v) for k, v in cp["environment"].items()}
    s = _settings_from_env(env)  # unknown or mistyped keys fail here
    assert f"{s.port}:{s.port}" in cp["ports"] and s.host == "0.0.0.0"
    db = urlparse(s.database_url or "")
    assert db.scheme == "postgresql+psycopg2" and db.hostname == "postgres" and db.port == 5432
    pg_env = services["postgres"]["environment"]
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    assert s.mqtt.host == "mosquitto"
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(rf"^listener {s.mqtt.port}\b", conf, re.M)
    ml = urlparse(s.mlflow_tracking_uri or "")
    assert ml.hostname == "mlflow" and f"--port {ml.port}" in services["mlflow"]["command"]
    tr = urlparse(s.triton_url or "")
    assert tr.hostname == "triton" and f"{tr.port}:{tr.port}" in services["triton"]["ports"]
    probe = " ".join(cp["healthcheck"]["test"])
    path = re.search(rf"127.0.0.1:{s.port}(/\w+)", probe).group(1)  # type: ignore[union-attr]
    assert path == "/ready" and path in routes
    assert cp["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_dockerfile_matches_compose_and_real_endpoints(
    compose: dict[str, Any], routes: set[str]
) -> None:
    text = (DEPLOY / "Dockerfile.control-plane").read_text()
    assert (
        compose["services"]["control-plane"]["build"]["dockerfile"]
        == "deploy/Dockerfile.control-plane"
    )
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    env = dict(re.findall(r"(FARMIQ_CP__\w+)=(\S+)", text))
    assert _settings_from_env(env).port == 8080
    assert "127.0.0.1:8080/health" in text and "/health" in routes
    assert re.search(r'^CMD \["farmiq", "control-plane", "serve"\]$', text, re.M)
    for pkg in ("farmiq", "control_plane", "edge_agent", "provisioning", "firmware_bridge"):
        assert f"COPY {pkg} ./{pkg}" in text, pkg


def test_k8s_workloads_have_probes_limits_and_pinned_images(
    k8s: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    workloads = _workloads(k8s)
    assert set(workloads) == SERVICES
    assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == "farmiq" for d in k8s)
    for name, w in workloads.items():
        spec = w["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        for c in spec["template"]["spec"]["containers"]:
            _image_pinned(c["image"])
            # The same image as the compose stack: one version of each part.
            assert c["image"] == compose["services"][name]["image"], name
            assert {"livenessProbe", "readinessProbe"} <= set(c), name
            limits, requests = c["resources"]["limits"], c["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), name
            ports = {p["name"] for p in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind) or {}
                for key in ("httpGet", "tcpSocket"):
                    if key in probe:
                        assert probe[key]["port"] in ports, f"{name} {kind} uses an unknown port"


def test_k8s_control_plane_probes_and_env_match_the_code(
    k8s: list[dict[str, Any]], routes: set[str]
) -> None:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    secrets = {
        g["name"]: dict(kv.split("=", 1) for kv in g["literals"])
        for g in kust.get("secretGenerator", [])
    }
    (c,) = _workloads(k8s)["control-plane"]["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {
        c[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe", "startupProbe")
    } <= routes
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    s = _settings_from_env(env)
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    assert s.port == port and s.host == "0.0.0.0"
    hosts = {
        urlparse(s.database_url or "").hostname,
        s.mqtt.host,
        urlparse(s.mlflow_tracking_uri or "").hostname,
        urlparse(s.triton_url or "").hostname,
    }
    services = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}
    assert hosts <= set(services), hosts - set(services)
    assert urlparse(s.database_url or "").password == secrets["farmiq-db"]["POSTGRES_PASSWORD"]


def test_k8s_services_select_workloads_and_named_ports(k8s: list[dict[str, Any]]) -> None:
    workloads = _workloads(k8s)
    for svc in (d for d in k8s if d["kind"] == "Service"):
        name = svc["metadata"]["name"]
        w = workloads[name]
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), name
        ports = {
            p["name"]: p["containerPort"]
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, (
                f"service {name} targets unknown port {p['targetPort']}"
            )
            assert p["port"] == ports[p["targetPort"]], name


def test_k8s_triton_gets_a_gpu_and_matches_compose(
    k8s: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    (c,) = _workloads(k8s)["triton"]["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    compose_args = shlex.split(compose["services"]["triton"]["command"])
    assert c["args"] == compose_args
    mlflow = _workloads(k8s)["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    assert mlflow["args"] == shlex.split(compose["services"]["mlflow"]["command"])


def test_k8s_mosquitto_config_is_the_compose_one() -> None:
    assert (DEPLOY / "k8s" / "mosquitto.conf").read_text() == (
        DEPLOY / "mosquitto" / "mosquitto.conf"
    ).read_text()
