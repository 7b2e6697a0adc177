"""The shipped cloud deployment (deploy/docker-compose.yml, deploy/k8s) is the topology
`farmiq stack` runs and the acceptance test proves: the same programs with the same
arguments (farmiq_sim/stack/topology.py), valid settings, state on volumes, signing in
OpenBao, Triton fed through its repository API, auth on, MQTT over mutual TLS.

No container engine or cluster runs here, so these read the files and check them against
the real settings model, the real FastAPI routes, the mosquitto config generator and the
installed MLflow client."""

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
from farmiq_sim.stack import topology

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_SERVICES = {
    "control-plane-1", "control-plane-2", "postgres", "mosquitto", "mlflow", "openbao",
    "rabbitmq", "triton",
}  # fmt: skip
K8S_WORKLOADS = {
    "control-plane",
    "postgres",
    "mosquitto",
    "mlflow",
    "openbao",
    "rabbitmq",
    "triton",
}
MLFLOW_ARGS = topology.mlflow_args(
    "0.0.0.0", 5000, "sqlite:////mlartifacts/mlflow.db", "/mlartifacts"
)
TRITON_ARGS = topology.triton_args("/models")
OPENBAO_ARGS = ["bao", "server", "-config=/openbao/config/openbao.hcl"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def kust() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def k8s(kust: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        path = DEPLOY / "k8s" / res
        assert path.exists(), f"kustomization lists a missing file: {res}"
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.fixture(scope="module")
def routes() -> set[str]:
    from control_plane.app import create_app

    return set(create_app(ControlPlaneSettings()).openapi()["paths"])


def _image_pinned(image: str) -> None:
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag, f"unpinned image {image}"


def _settings_from_env(env: dict[str, str]) -> ControlPlaneSettings:
    return load_config(ControlPlaneSettings, env_prefix=ENV_PREFIX, environ=env)


def _workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def _container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (c,) = _workloads(docs)[name]["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def _command(svc: dict[str, Any]) -> list[str]:
    cmd = svc["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"


def _k8s_env(c: dict[str, Any], kust: dict[str, Any], replica: int = 1) -> dict[str, str]:
    """The container's environment as Kubernetes resolves it for pod ``replica``: Secret
    references, the pod-index label, and ``$(VAR)`` of variables defined above."""
    secrets = {
        g["name"]: dict(kv.split("#")[0].strip().split("=", 1) for kv in g["literals"])
        for g in kust.get("secretGenerator", [])
    }
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
        elif "fieldRef" in e["valueFrom"]:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX
            env[e["name"]] = str(replica)
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def _check_production_settings(s: ControlPlaneSettings) -> None:
    """What every deployed replica must have: auth, KMS signing, mTLS broker, alerts."""
    assert s.host == "0.0.0.0" and s.auth_enabled
    assert (
        s.signing.backend == "vault" and urlparse(s.signing.vault_url or "").hostname == "openbao"
    )
    assert s.signing.vault_token_file is not None and s.signing.vault_token is None
    assert list(s.signing.keys) == list(topology.TRANSIT_KEYS)
    assert s.signing.threshold == topology.SIGNING_THRESHOLD and s.signing_keys == []
    assert s.mqtt.host == "mosquitto" and s.mqtt.port == topology.MQTT_TLS_PORT
    fleet = str(s.fleet_dir)
    for f in (s.mqtt.tls_ca, s.mqtt.tls_cert, s.mqtt.tls_key):
        assert f is not None and str(f).startswith(fleet + "/"), f
    assert urlparse(s.alerts.amqp_url or "").hostname == "rabbitmq"
    assert urlparse(s.mlflow_tracking_uri or "").hostname == "mlflow"
    assert urlparse(s.triton_url or "").hostname == "triton" and s.triton_repository is None


def test_mlflow_server_image_is_the_installed_client_version(
    compose: dict[str, Any], k8s: list[dict[str, Any]]
) -> None:
    import mlflow

    major = int(mlflow.__version__.split(".")[0])
    assert major == topology.MLFLOW_MAJOR
    for image in (compose["services"]["mlflow"]["image"], _container(k8s, "mlflow")["image"],
                  topology.MLFLOW_IMAGE):  # fmt: skip
        tag = image.rpartition(":")[2].lstrip("v")
        assert int(tag.split(".")[0]) == major, f"{image} vs mlflow {mlflow.__version__}"


def test_compose_runs_the_topology_with_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, svc in services.items():
        _image_pinned(svc["image"])
        assert svc.get("restart") == "unless-stopped", name
    assert _command(services["mlflow"]) == MLFLOW_ARGS
    assert _command(services["triton"]) == TRITON_ARGS
    assert _command(services["openbao"]) == OPENBAO_ARGS
    for n in (1, 2):
        assert _command(services[f"control-plane-{n}"]) == topology.control_plane_args()
    gpu = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpu == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # Triton gets its models through the API: a scratch tmpfs, no volume shared with anyone.
    assert "volumes" not in services["triton"] and services["triton"]["tmpfs"] == ["/models"]


def test_compose_replicas_share_one_store_and_have_valid_production_settings(
    compose: dict[str, Any], routes: set[str]
) -> None:
    services = compose["services"]
    cps = [services[f"control-plane-{n}"] for n in (1, 2)]
    # The same settings but for each replica's own broker identity (client-1, client-2).
    envs = [dict(cp["environment"]) for cp in cps]
    own = {"FARMIQ_CP__MQTT__TLS_CERT", "FARMIQ_CP__MQTT__TLS_KEY"}
    assert {k for k in envs[0] if envs[0][k] != envs[1].get(k)} == own
    for n, env_n in enumerate(envs, start=1):
        cert, key = (Path(env_n[k]).name for k in sorted(own))
        assert (cert, key) == (f"client-{n}.crt", f"client-{n}.key")
    assert cps[0]["volumes"] == cps[1]["volumes"]
    env = {k: str(v) for k, v in cps[0]["environment"].items()}
    s = _settings_from_env(env)  # unknown or mistyped keys fail here
    _check_production_settings(s)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in cps[0]["volumes"]}
    assert mounts[str(s.data_dir)] in compose["volumes"]  # a named volume, not per replica
    assert any(m.startswith(str(s.fleet_dir)) for m in mounts)
    assert not any("offline" in src or "signing" in src for src in mounts.values())
    assert s.signing.vault_token_file == Path("/run/secrets/vault-token")
    assert cps[0]["secrets"] == ["vault-token"]
    db = urlparse(s.database_url or "")
    assert db.scheme == "postgresql+psycopg2" and db.hostname == "postgres" and db.port == 5432
    pg_env = services["postgres"]["environment"]
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"],
    )  # fmt: skip
    amqp = urlparse(s.alerts.amqp_url or "")
    rmq = services["rabbitmq"]["environment"]
    assert (amqp.username, amqp.password) == (
        rmq["RABBITMQ_DEFAULT_USER"],
        rmq["RABBITMQ_DEFAULT_PASS"],
    )
    ml = urlparse(s.mlflow_tracking_uri or "")
    assert ml.port == int(MLFLOW_ARGS[MLFLOW_ARGS.index("--port") + 1])
    assert f"{s.mqtt.port}:{s.mqtt.port}" in services["mosquitto"]["ports"]
    probe = " ".join(cps[0]["healthcheck"]["test"])
    path = re.search(rf"127.0.0.1:{s.port}(/\w+)", probe).group(1)  # type: ignore[union-attr]
    assert path == "/ready" and path in routes
    assert cps[0]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_state_lives_on_volumes(compose: dict[str, Any], k8s: list[dict[str, Any]]) -> None:
    services = compose["services"]
    for name, mount in (("postgres", "/var/lib/postgresql/data"), ("mlflow", "/mlartifacts"),
                        ("openbao", "/openbao/data"), ("mosquitto", "/mosquitto/data"),
                        ("rabbitmq", "/var/lib/rabbitmq")):  # fmt: skip
        vols = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert vols[mount] in compose["volumes"], name
    hcl = (DEPLOY / "openbao" / "openbao.hcl").read_text()
    assert re.search(r'storage "file" \{\s*path = "/openbao/data"', hcl)
    assert (DEPLOY / "k8s" / "openbao.hcl").read_text() == hcl
    for name, w in _workloads(k8s).items():
        for v in w["spec"]["template"]["spec"].get("volumes", []):
            if "emptyDir" in v:  # only scratch: Triton's empty repository and shared memory
                assert (name, v["name"]) in {("triton", "scratch"), ("triton", "dshm")}, (name, v)
    for name in ("postgres", "mlflow", "openbao", "mosquitto", "rabbitmq"):
        assert _workloads(k8s)[name]["spec"]["volumeClaimTemplates"], name
    pvcs = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "PersistentVolumeClaim"}
    assert pvcs["control-plane-store"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_mosquitto_config_is_the_generated_mutual_tls_one(tmp_path: Path) -> None:
    from provisioning.fleet import init_fleet
    from provisioning.mosquitto_config import acl_text, write_mosquitto_config

    fleet = init_fleet(tmp_path / "fleet", root_threshold=1, root_keys=1)
    out = tmp_path / "out"
    cfg = write_mosquitto_config(
        fleet.root, out / "mosquitto.conf", port=topology.MQTT_TLS_PORT, bind="0.0.0.0",
        acl_path=out / "mosquitto.acl", persistence_dir=Path("/mosquitto/data"),
        max_queued_messages=100000,
    )  # fmt: skip
    generated = cfg.conf.read_text().replace(str(out.resolve()), "/mosquitto/config")
    generated = generated.replace(str(fleet.root.resolve()), "/mosquitto/fleet")

    def directives(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    shipped = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert directives(shipped) == directives(generated)
    assert "require_certificate true" in shipped and "allow_anonymous false" in shipped
    assert (DEPLOY / "mosquitto" / "mosquitto.acl").read_text() == acl_text()
    for f in ("mosquitto.conf", "mosquitto.acl"):
        assert (DEPLOY / "k8s" / f).read_text() == (DEPLOY / "mosquitto" / f).read_text()


def test_init_fleet_issues_one_broker_identity_per_shipped_replica(tmp_path: Path) -> None:
    """`farmiq provision init-fleet` makes the client-1, client-2 identities the manifests
    mount, each with a CN of its own that the shipped broker ACL knows."""
    import subprocess
    import sys

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "provision", "init-fleet", "--dir", str(tmp_path / "f"),
         "--root-threshold", "1", "--root-keys", "1", "--broker-host", "mosquitto"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    acl = (DEPLOY / "mosquitto" / "mosquitto.acl").read_text()
    cns = set()
    for n in (1, 2):
        assert f"client-{n}.crt" in out.stdout
        cert = x509.load_pem_x509_certificate(
            (tmp_path / "f" / "control-plane" / f"client-{n}.crt").read_bytes()
        )
        (cn,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert f"user {cn.value}\n" in acl
        cns.add(cn.value)
    assert len(cns) == 2


def test_dockerfile_matches_compose_and_real_endpoints(
    compose: dict[str, Any], routes: set[str]
) -> None:
    text = (DEPLOY / "Dockerfile.control-plane").read_text()
    assert (
        compose["services"]["control-plane-1"]["build"]["dockerfile"]
        == "deploy/Dockerfile.control-plane"
    )
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    env = dict(re.findall(r"(FARMIQ_CP__\w+)=(\S+)", text))
    assert _settings_from_env(env).port == 8080
    assert "127.0.0.1:8080/health" in text and "/health" in routes
    assert re.search(r'^CMD \["farmiq", "control-plane", "serve"\]$', text, re.M)
    for pkg in ("farmiq", "control_plane", "edge_agent", "provisioning", "firmware_bridge"):
        assert f"COPY {pkg} ./{pkg}" in text, pkg


def test_k8s_workloads_have_probes_limits_and_the_compose_images(
    k8s: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    workloads = _workloads(k8s)
    assert set(workloads) == K8S_WORKLOADS
    assert any(d["kind"] == "Namespace" and d["metadata"]["name"] == "farmiq" for d in k8s)
    for name, w in workloads.items():
        spec = w["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        svc = compose["services"]["control-plane-1" if name == "control-plane" else name]
        for c in spec["template"]["spec"]["containers"]:
            _image_pinned(c["image"])
            assert c["image"] == svc["image"], name  # one version of each part
            assert {"livenessProbe", "readinessProbe"} <= set(c), name
            limits, requests = c["resources"]["limits"], c["resources"]["requests"]
            assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests), name
            ports = {p["name"] for p in c.get("ports", [])}
            for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
                probe = c.get(kind) or {}
                for key in ("httpGet", "tcpSocket"):
                    if key in probe:
                        assert probe[key]["port"] in ports, f"{name} {kind} uses an unknown port"
    assert _container(k8s, "mlflow")["args"] == MLFLOW_ARGS
    assert _container(k8s, "triton")["args"] == TRITON_ARGS
    assert _container(k8s, "openbao")["args"] == OPENBAO_ARGS
    assert _container(k8s, "control-plane")["args"] == topology.control_plane_args()
    cp = workloads["control-plane"]
    assert cp["kind"] == "StatefulSet" and cp["spec"]["replicas"] == 2
    assert cp["spec"]["ordinals"]["start"] == 1  # pods control-plane-1, -2: identities client-1, -2


def test_k8s_control_plane_env_matches_the_code_and_mounts_one_fleet_secret(
    k8s: list[dict[str, Any]], kust: dict[str, Any], routes: set[str]
) -> None:
    c = _container(k8s, "control-plane")
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {
        c[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe", "startupProbe")
    } <= routes
    s = _settings_from_env(_k8s_env(c, kust))
    _check_production_settings(s)
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    assert s.port == port
    hosts = {
        urlparse(s.database_url or "").hostname, s.mqtt.host,
        urlparse(s.mlflow_tracking_uri or "").hostname, urlparse(s.triton_url or "").hostname,
        urlparse(s.signing.vault_url or "").hostname, urlparse(s.alerts.amqp_url or "").hostname,
    }  # fmt: skip
    services = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}
    assert hosts <= set(services), hosts - set(services)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {
        v["name"]: v
        for v in _workloads(k8s)["control-plane"]["spec"]["template"]["spec"]["volumes"]
    }
    assert (
        mounts["fleet"] == str(s.fleet_dir)
        and vols["fleet"]["secret"]["secretName"] == "farmiq-fleet"
    )
    paths = {i["path"] for i in vols["fleet"]["secret"]["items"]}
    certs = set()
    for replica in (1, 2):  # each replica its own broker identity, all in the one Secret
        r = _settings_from_env(_k8s_env(c, kust, replica))
        for f in (r.mqtt.tls_ca, r.mqtt.tls_cert, r.mqtt.tls_key):
            assert str(f).removeprefix(f"{s.fleet_dir}/") in paths, f
        certs.add(str(r.mqtt.tls_cert))
    assert certs == {f"{s.fleet_dir}/control-plane/client-{n}.crt" for n in (1, 2)}
    assert "public/root.json" in paths and not any(
        p.startswith(("offline", "signing")) for p in paths
    )
    assert str(s.signing.vault_token_file).startswith(mounts["vault-token"] + "/")
    assert mounts["store"] == str(s.data_dir)
    assert vols["store"]["persistentVolumeClaim"]["claimName"] == "control-plane-store"


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
    assert _container(k8s, "triton")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _container(k8s, "triton")["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
