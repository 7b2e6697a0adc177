"""``farmiq stack up | status | down``: the production topology as local processes.

Every part is a real server (farmiq_sim/stack/topology.py names them and their
arguments, shared with deploy/): the machine's PostgreSQL with databases of this stack's
own, an MLflow tracking server proxying artifacts, OpenBao holding the bundle-signing keys
in its transit engine, Mosquitto with mutual TLS and the generated per-gateway ACL, two
control-plane replicas sharing PostgreSQL and one store (bundles, Feast repository),
Triton fed through its repository API, the machine's RabbitMQ for alerts, and N gateway
agents enrolled with one-time tokens, each with its own state and certificate.

Everything this stack starts has a pid file under ``<workdir>/run``; ``down`` stops those
and nothing else. Ports are free ports, names carry the stack id, so stacks in two
workdirs never collide. The shared machine services (PostgreSQL, RabbitMQ) are started
when down but never stopped: other stacks and programs use them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from farmiq.config import dump_toml
from farmiq_sim.stack import topology
from farmiq_sim.stack.processes import (
    ProcessTable,
    free_port,
    port_open,
    wait_http,
    wait_port,
)

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432"
PG_PORT = 5432
AMQP_PORT = 5672
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
STACK_FILE = "stack.json"
START_TIMEOUT_S = 240.0  # MLflow's server imports for a long time on a busy 2-core machine


class StackError(RuntimeError):
    """A stack cannot be brought up, found or stopped; the message says why."""


@dataclass
class Gateway:
    device_id: str
    dir: str
    api_url: str
    config: str


@dataclass
class StackInfo:
    id: str
    workdir: str
    database: str
    mlflow_url: str
    vault_url: str
    vault_token_file: str
    mqtt_port: int
    triton_url: str
    control_planes: list[str]
    api_key: str
    amqp_url: str
    fleet_dir: str
    gateways: list[Gateway] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # process names, in start order

    @property
    def database_url(self) -> str:
        return f"{PG_ADMIN}/{self.database}"

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the API key
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=2)

    @classmethod
    def load(cls, workdir: Path) -> StackInfo:
        path = workdir / STACK_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raise StackError(f"no stack in {workdir} (no readable {STACK_FILE})") from None
        raw["gateways"] = [Gateway(**g) for g in raw.get("gateways", [])]
        return cls(**raw)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "FEAST_USAGE": "False",
        "FARMIQ_LOG_FORMAT": "json",
    }


# -- the machine's shared services ---------------------------------------------------------
def ensure_postgres(timeout: float = 30) -> None:
    if port_open("127.0.0.1", PG_PORT):
        return
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        raise StackError("PostgreSQL is not running on :5432 and is not installed (apt postgresql)")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        check=False,
        capture_output=True,
        timeout=60,
    )
    _wait_port(PG_PORT, timeout, "PostgreSQL")


def ensure_rabbitmq(timeout: float = 90) -> None:
    if port_open("127.0.0.1", AMQP_PORT):
        return
    exe = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
    if not Path(exe).exists():
        raise StackError(
            "RabbitMQ is not running on :5672 and is not installed (apt rabbitmq-server)"
        )
    subprocess.run([exe, "-detached"], check=False, capture_output=True, timeout=60)
    _wait_port(AMQP_PORT, timeout, "RabbitMQ")


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not port_open("127.0.0.1", port):
        if time.time() > deadline:
            raise StackError(f"{what} did not come up on 127.0.0.1:{port} within {timeout:.0f}s")
        time.sleep(0.25)


def _admin_engine() -> Any:
    import sqlalchemy as sa

    return sa.create_engine(f"{PG_ADMIN}/postgres", isolation_level="AUTOCOMMIT")


def create_databases(*names: str) -> None:
    import sqlalchemy as sa

    engine = _admin_engine()
    try:
        with engine.connect() as c:
            for name in names:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise StackError(f"cannot create databases on PostgreSQL :5432: {exc}") from None
    finally:
        engine.dispose()


def drop_databases(*names: str) -> None:
    import sqlalchemy as sa

    engine = _admin_engine()
    try:
        with engine.connect() as c:
            for name in names:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


# -- up ------------------------------------------------------------------------------------
def stack_id(workdir: Path) -> str:
    digest = hashlib.sha256(f"{workdir}:{secrets.token_hex(4)}".encode()).hexdigest()
    return f"s{digest[:10]}"


def up(
    workdir: Path,
    gateways: int = 2,
    *,
    drift_window_s: float = 3600.0,
    say: Any = print,
) -> StackInfo:
    workdir = workdir.resolve()
    if (workdir / STACK_FILE).exists():
        raise StackError(
            f"{workdir} already holds a stack: `farmiq stack status --workdir {workdir}`, "
            f"or `farmiq stack down --purge --workdir {workdir}` first"
        )
    if not 0 <= gateways <= 50:
        raise StackError("--gateways must be between 0 and 50")
    workdir.mkdir(parents=True, exist_ok=True)
    table = ProcessTable(workdir)
    sid = stack_id(workdir)
    env = _env()
    t0 = time.time()

    ensure_postgres()
    ensure_rabbitmq()
    db = f"farmiq_{sid}"
    create_databases(db)
    info = StackInfo(
        id=sid, workdir=str(workdir), database=db, mlflow_url="",
        vault_url="", vault_token_file="", mqtt_port=0, triton_url="", control_planes=[],
        api_key="", amqp_url=AMQP_URL, fleet_dir=str(workdir / "fleet"),
    )  # fmt: skip
    info.save(workdir / STACK_FILE)  # from here on `down --purge` can clean up
    try:
        _bring_up(info, table, env, gateways, drift_window_s, say)
    except BaseException:
        info.save(workdir / STACK_FILE)
        down(workdir, purge=False, say=lambda *_: None)
        raise
    info.save(workdir / STACK_FILE)
    say(f"stack {sid} up in {time.time() - t0:.0f}s ({workdir})")
    return info


def _bring_up(
    info: StackInfo,
    table: ProcessTable,
    env: dict[str, str],
    n_gateways: int,
    drift_window_s: float,
    say: Any,
) -> None:
    from control_plane.signing.rotation import adopt_transit_keys
    from control_plane.signing.transit import TransitKeys
    from farmiq_sim.stack.openbao import dev_server_argv, dev_server_env
    from farmiq_sim.triton_server import TritonServer
    from provisioning.fleet import init_fleet
    from provisioning.mosquitto_config import write_mosquitto_config

    workdir = Path(info.workdir)
    py = sys.executable

    def spawn(name: str, argv: list[str], e: dict[str, str] | None = None) -> None:
        table.spawn(name, argv, env=e or env, cwd=workdir)
        info.started.append(name)

    fleet = init_fleet(
        workdir / "fleet", root_threshold=2, root_keys=3,
        broker_hosts=("127.0.0.1", "localhost"), fleet_name=f"farmiq-{info.id}",
    )  # fmt: skip

    # 1. the servers nothing else depends on, started together
    bao_port, bao_token = free_port(), secrets.token_urlsafe(24)
    spawn("openbao", dev_server_argv(bao_port, bao_token), dev_server_env(workdir / "openbao"))
    info.vault_url = f"http://127.0.0.1:{bao_port}"

    ml_port = free_port()
    (workdir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
    # Its own store, not the control plane's database (both keep an alembic_version
    # table); SQLite on its volume, as the MLflow image runs it (it has no psycopg2).
    ml_args = topology.mlflow_args(
        "127.0.0.1", ml_port, f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}",
        str(workdir / "mlflow" / "artifacts"),
    )  # fmt: skip
    spawn("mlflow", [py, "-m", "mlflow", *ml_args[1:]])
    info.mlflow_url = f"http://127.0.0.1:{ml_port}"

    info.mqtt_port = free_port()
    user = "root" if os.geteuid() == 0 else None  # keep privileges to read the 0600 key
    (workdir / "mosquitto" / "data").mkdir(parents=True, exist_ok=True)
    mq = write_mosquitto_config(
        fleet.root, workdir / "mosquitto" / "mosquitto.conf", port=info.mqtt_port,
        persistence_dir=workdir / "mosquitto" / "data", run_as_user=user,
    )  # fmt: skip
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    spawn("mosquitto", [mosquitto, *topology.mosquitto_args(str(mq.conf))[1:]])

    triton = TritonServer(workdir / "triton" / "repository", workdir / "triton")
    (workdir / "triton" / "repository").mkdir(parents=True, exist_ok=True)
    exe = str(Path(triton.command()[0]))
    extra = (
        f"--backend-directory={triton.backend_directory()}",
        f"--http-port={triton.http_port}", f"--grpc-port={triton.grpc_port}",
        f"--metrics-port={triton.metrics_port}", "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1", "--allow-sagemaker=false", "--allow-vertex-ai=false",
        "--exit-timeout-secs=5",
    )  # fmt: skip
    tr_args = topology.triton_args(str(triton.repository), extra)
    spawn("triton", [exe, *tr_args[1:]], triton.env())
    info.triton_url = triton.http_url

    # 2. the signing keys into the KMS, their public halves into the fleet's root
    wait_http(f"{info.vault_url}/v1/sys/health", 60, what="OpenBao", table=table, name="openbao")
    token_file = workdir / "openbao" / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(bao_token)
    info.vault_token_file = str(token_file)
    kms = TransitKeys(info.vault_url, bao_token)
    kms.enable_engine()
    adopt_transit_keys(fleet, kms, topology.TRANSIT_KEYS, topology.SIGNING_THRESHOLD)
    say(f"openbao     {info.vault_url}  transit keys {', '.join(topology.TRANSIT_KEYS)} "
        f"({topology.SIGNING_THRESHOLD} of {len(topology.TRANSIT_KEYS)} sign)")  # fmt: skip

    wait_port(info.mqtt_port, 30, what="Mosquitto", table=table, name="mosquitto")
    say(f"mosquitto   mqtts://127.0.0.1:{info.mqtt_port}  (mutual TLS, per-gateway ACL {mq.acl})")
    with ThreadPoolExecutor(2) as pool:
        waits = [
            pool.submit(wait_http, f"{info.mlflow_url}/health", START_TIMEOUT_S,
                        what="MLflow server", table=table, name="mlflow"),
            pool.submit(wait_http, f"{info.triton_url}/v2/health/ready", START_TIMEOUT_S,
                        what="Triton", table=table, name="triton"),
        ]  # fmt: skip
        for w in waits:
            w.result()
    say(f"mlflow      {info.mlflow_url}  (--serve-artifacts: mlflow-artifacts:/ URIs)")
    say(f"triton      {info.triton_url}  (explicit model control, repository API)")
    say(f"postgres    127.0.0.1:5432/{info.database}")
    say(f"rabbitmq    {AMQP_URL}")

    # 3. two control-plane replicas on one database and one store
    store = workdir / "control-plane-store"
    for n in (1, 2):
        port = free_port()
        conf = workdir / f"control-plane-{n}.toml"
        conf.write_text(dump_toml(_cp_config(info, fleet, store, port, n)))
        cp_env = {**env, "FARMIQ_ROLLOUT_REPLICA": f"cp-{n}", "FARMIQ_ROLLOUT_TICK_S": "0.5"}
        name = f"control-plane-{n}"
        spawn(name, [py, "-m", "farmiq", *topology.control_plane_args(str(conf))[1:]], cp_env)
        url = f"http://127.0.0.1:{port}"
        # The first replica migrates the schema and creates the store; then the second.
        wait_http(f"{url}/ready", START_TIMEOUT_S, what=name, table=table, name=name)
        info.control_planes.append(url)
        if n == 1:
            info.api_key = _operator_key(info)
        say(f"{name} {url}  (docs {url}/docs)")
    info.save(workdir / STACK_FILE)

    # 4. the gateways: enrolled with one-time tokens, each its own identity and state
    for i in range(1, n_gateways + 1):
        gw = _enroll_gateway(info, f"gw-{info.id[1:7]}-{i:02d}", workdir, drift_window_s)
        spawn(f"agent-{i:02d}", [py, "-m", "farmiq", "agent", "run", "-c", gw.config])
        info.gateways.append(gw)
    for i, gw in enumerate(info.gateways, start=1):
        wait_http(f"{gw.api_url}/health", 90, what=gw.device_id, table=table, name=f"agent-{i:02d}")
        say(f"gateway     {gw.device_id}  {gw.api_url}  (mTLS identity in {gw.dir})")
    say(f"operator API key (admin): {info.api_key}")
    say(f"  export FARMIQ_URL={info.control_planes[0]} FARMIQ_API_KEY={info.api_key}")


def _cp_config(info: StackInfo, fleet: Any, store: Path, port: int, n: int) -> dict[str, Any]:
    from provisioning.fleet import issue_control_plane_replica

    # Each replica its own broker identity: the broker binds client ids to identities.
    cert, key = issue_control_plane_replica(fleet, n)
    return {
        "data_dir": str(store),
        "database_url": info.database_url,
        "mlflow_tracking_uri": info.mlflow_url,
        "host": "127.0.0.1",
        "port": port,
        "fleet_dir": str(fleet.root),
        "auth_enabled": True,
        "triton_url": info.triton_url,
        "triton_variant": "python",  # the pytriton tritonserver has the python backend only
        "signing": {
            "backend": "vault",
            "vault_url": info.vault_url,
            "vault_token_file": info.vault_token_file,
            "keys": list(topology.TRANSIT_KEYS),
            "threshold": topology.SIGNING_THRESHOLD,
        },
        "alerts": {"amqp_url": info.amqp_url},
        "mqtt": {
            "host": "127.0.0.1",
            "port": info.mqtt_port,
            "tls_ca": str(fleet.ca_cert),
            "tls_cert": str(cert),
            "tls_key": str(key),
            "client_id": f"farmiq-cp-{info.id}-{n}",
            "share_group": f"farmiq-cp-{info.id}",
        },
    }


def _operator_key(info: StackInfo) -> str:
    """The first admin key, made in the control plane's database (as `farmiq provision
    api-key` does); only its digest is stored there."""
    import sqlalchemy as sa

    from control_plane.security import ApiKeyStore, audit

    engine = sa.create_engine(info.database_url)
    try:
        key = ApiKeyStore(engine).create("stack-operator", "admin", created_by="farmiq stack")
        audit(engine, "farmiq stack", "apikey.create", "stack-operator", "local", {"role": "admin"})
    finally:
        engine.dispose()
    return key


def _enroll_gateway(info: StackInfo, device_id: str, workdir: Path, window_s: float) -> Gateway:
    from provisioning.enroll_client import enroll

    api = info.control_planes[0]
    r = httpx.post(
        f"{api}/api/v1/enrollment/tokens",
        json={"device_id": device_id, "ttl_s": 600},
        headers={"Authorization": f"Bearer {info.api_key}"},
        timeout=30,
    )
    if r.status_code != 200:
        raise StackError(f"enrollment token for {device_id}: {r.status_code} {r.text[:300]}")
    gdir = workdir / "gateways" / device_id
    files = enroll(api, r.json()["token"], device_id, gdir / "etc", state_dir=str(gdir / "state"))
    # The enrolled agent.toml names the fleet's broker; this stack's broker listens on a
    # free port, and each local agent needs its own API port and the cloud Triton.
    conf = tomllib.loads(files.config.read_text())
    api_port = free_port()
    conf["mqtt"]["port"] = info.mqtt_port
    conf["api"] = {"host": "127.0.0.1", "port": api_port}
    conf["cloud"] = {"triton_url": info.triton_url, "timeout_ms": 2000.0}
    conf["drift"] = {"window_s": window_s}
    conf["farm_id"] = f"farm-{info.id}"
    files.config.write_text(dump_toml(conf))
    return Gateway(device_id, str(gdir), f"http://127.0.0.1:{api_port}", str(files.config))


# -- status / down -------------------------------------------------------------------------
def _probe(url: str, headers: dict[str, str] | None = None) -> str:
    try:
        r = httpx.get(url, timeout=3, headers=headers)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok" if r.status_code == 200 else f"HTTP {r.status_code}"


def status(workdir: Path) -> list[tuple[str, str, str]]:
    """(part, where, health) for every part of the stack in ``workdir``."""
    workdir = workdir.resolve()
    info = StackInfo.load(workdir)
    table = ProcessTable(workdir)

    def proc(name: str, health: str) -> str:
        if not table.alive(name):
            return "stopped" if table.record(name) is None else "dead (process gone)"
        return health

    rows = [
        ("postgres", f"127.0.0.1:{PG_PORT}/{info.database}",
         "ok" if port_open("127.0.0.1", PG_PORT) else "down"),
        ("rabbitmq", info.amqp_url, "ok" if port_open("127.0.0.1", AMQP_PORT) else "down"),
        ("openbao", info.vault_url, proc("openbao", _probe(f"{info.vault_url}/v1/sys/health"))),
        ("mlflow", info.mlflow_url, proc("mlflow", _probe(f"{info.mlflow_url}/health"))),
        ("mosquitto", f"mqtts://127.0.0.1:{info.mqtt_port}",
         proc("mosquitto", "ok" if port_open("127.0.0.1", info.mqtt_port) else "not listening")),
        ("triton", info.triton_url, proc("triton", _probe(f"{info.triton_url}/v2/health/ready"))),
    ]  # fmt: skip
    for n, url in enumerate(info.control_planes, start=1):
        rows.append((f"control-plane-{n}", url, proc(f"control-plane-{n}", _probe(f"{url}/ready"))))
    for i, gw in enumerate(info.gateways, start=1):
        rows.append(
            (
                f"agent {gw.device_id}",
                gw.api_url,
                proc(f"agent-{i:02d}", _probe(f"{gw.api_url}/health")),
            )
        )
    return rows


def down(workdir: Path, *, purge: bool = False, say: Any = print) -> list[str]:
    """Stop what this stack started (reverse order); with ``purge`` also drop its
    databases and delete the workdir."""
    workdir = workdir.resolve()
    info = StackInfo.load(workdir)
    table = ProcessTable(workdir)
    order = list(reversed(info.started)) + [n for n in table.names() if n not in info.started]
    stopped = []
    for name in order:
        if table.stop(name):
            stopped.append(name)
            say(f"stopped {name}")
    if purge:
        try:
            drop_databases(info.database)
        except Exception as exc:
            say(f"could not drop database {info.database}: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"removed {workdir} and database {info.database}")
    return stopped
