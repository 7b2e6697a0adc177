"""The gateway agent as a systemd service: notify protocol, graceful stop, reload,
health/readiness, metrics and JSON logs — on the real agent process and a real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import tomllib
from typing import Any

import httpx
import pytest

from farmiq import topics
from farmiq.config import dump_toml
from tests.ops.conftest import MODEL, NotifySocket, publish
from tests.support.mqtt import retained

STOP_TIMEOUT_S = 30  # TimeoutStopSec of systemd/farmiq-agent.service


def _start(
    agent: Any, notify: NotifySocket | None = None, watchdog_usec: int | None = None
) -> None:
    env = dict(agent.env)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.name
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    agent.env = env
    agent.start()


def _install(agent: Any, mqtt_port: int, bundle: bytes) -> None:
    agent.wait_subscribed()  # the bundle cannot be missed
    publish(mqtt_port, topics.down(agent.device_id, topics.BUNDLE), bundle)
    agent.wait_for(lambda s: s["last_install"] is not None, what="the install")
    assert agent.installed_version(MODEL) == 1


def test_notify_ready_watchdog_status_stopping(
    agent_factory, device_id, ops_trust, notify_socket, mqtt_port, barn_bundle
):
    agent = agent_factory(device_id, ops_trust, start=False)
    _start(agent, notify_socket, watchdog_usec=400_000)  # WatchdogSec=0.4s -> ping every 0.2s

    ready = notify_socket.wait_for(lambda m: m.get("READY") == "1")
    # READY=1 says "started"; STATUS says first that nothing is served yet.
    assert ready["STATUS"].startswith("started, not serving: no model installed"), ready
    # READY comes only once the local API answers.
    assert agent.get("/health").status_code == 200
    t0 = time.monotonic()
    time.sleep(1.2)
    notify_socket.drain()
    pings = [t for t, m in notify_socket.messages if m.get("WATCHDOG") == "1" and t >= t0]
    assert len(pings) >= 3, notify_socket.messages  # about 6 expected in 1.2 s

    _install(agent, mqtt_port, barn_bundle)
    status = notify_socket.wait_for(lambda m: "STATUS" in m and f"{MODEL} v1" in m["STATUS"])
    assert status["STATUS"].startswith("ready: serving")

    t0 = time.monotonic()
    assert agent.stop(timeout=STOP_TIMEOUT_S) == 0
    assert time.monotonic() - t0 < STOP_TIMEOUT_S
    stopping = notify_socket.wait_for(lambda m: m.get("STOPPING") == "1", timeout=2)
    assert "draining" in stopping["STATUS"]


def test_no_watchdog_pings_without_watchdog_usec(
    agent_factory, device_id, ops_trust, notify_socket
):
    agent = agent_factory(device_id, ops_trust, start=False)
    _start(agent, notify_socket)
    notify_socket.wait_for(lambda m: m.get("READY") == "1")
    time.sleep(0.5)
    assert notify_socket.with_key("WATCHDOG") == []


def _send_partial_request(port: int, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (
        f"POST /api/v1/inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: inflight-1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    s.sendall(head + body[:10])  # the request is in flight: headers and part of the body
    return s


def _read_response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split()[1]), rest


def test_sigterm_finishes_in_flight_request_then_says_offline(
    agent_factory, device_id, ops_trust, mqtt_port, barn_bundle, barn_model, notify_socket
):
    agent = agent_factory(device_id, ops_trust, start=False)
    _start(agent, notify_socket)
    _install(agent, mqtt_port, barn_bundle)
    assert retained(mqtt_port, topics.up(device_id, topics.STATUS)) == b"online"

    body = json.dumps({"model": MODEL, "inputs": barn_model.X_test[:4].tolist()}).encode()
    s = _send_partial_request(agent.port, body)
    time.sleep(0.2)
    assert agent.proc is not None
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    notify_socket.wait_for(lambda m: m.get("STOPPING") == "1", timeout=5)
    # New connections are refused while the in-flight request is still served.
    with pytest.raises(httpx.HTTPError):
        httpx.get(agent.url + "/health", timeout=2)
    s.sendall(body[10:])
    status, payload = _read_response(s)
    s.close()
    assert status == 200, payload
    assert len(json.loads(payload)["outputs"]) > 0
    assert agent.proc.wait(STOP_TIMEOUT_S) == 0
    assert time.monotonic() - t0 < STOP_TIMEOUT_S
    # The broker was told, in order, before the link closed.
    assert retained(mqtt_port, topics.up(device_id, topics.STATUS)) == b"offline"


def test_sighup_reloads_configuration_and_keeps_serving(
    agent_factory, device_id, ops_trust, notify_socket, mqtt_port
):
    agent = agent_factory(device_id, ops_trust, start=False, tags=["dairy"])
    _start(agent, notify_socket)
    notify_socket.wait_for(lambda m: m.get("READY") == "1")
    assert agent.get("/api/v1/status").json()["state"]["tags"] == ["dairy"]
    original = agent.config_path.read_text()

    cfg = tomllib.loads(original)
    cfg["tags"] = ["dairy", "north-barn"]
    cfg["farm_id"] = "farm-7"
    cfg["api"]["port"] = agent.port + 1  # needs a restart: reported, not applied
    agent.config_path.write_text(dump_toml(cfg))
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)
    notify_socket.wait_for(lambda m: m.get("RELOADING") == "1")
    assert "MONOTONIC_USEC" in notify_socket.with_key("RELOADING")[0]
    st = agent.wait_for(lambda s: s["state"]["tags"] == ["dairy", "north-barn"], what="reload")
    assert st["state"]["farm_id"] == "farm-7"
    assert agent.get("/health").status_code == 200  # same port: the API was not moved
    log = agent.log_text()
    assert "need a restart" in log and "'api'" in log
    # The new state reached the cloud side too.
    state = json.loads(retained(mqtt_port, topics.up(device_id, topics.STATE)) or b"{}")
    assert state.get("tags") == ["dairy", "north-barn"]

    # A broken file is refused; the agent keeps running with what it had.
    agent.config_path.write_text("device_id = [not toml")
    agent.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert agent.proc.poll() is None
    assert agent.get("/api/v1/status").json()["state"]["farm_id"] == "farm-7"
    assert "reload failed" in agent.log_text()
    agent.config_path.write_text(original)


def test_health_and_ready_mean_what_they_say(
    agent_factory, device_id, ops_trust, mqtt_port, barn_bundle
):
    agent = agent_factory(device_id, ops_trust)
    assert agent.get("/health").json()["status"] == "ok"
    r = agent.get("/ready")
    assert r.status_code == 503 and r.json()["reason"] == "no model installed"
    _install(agent, mqtt_port, barn_bundle)
    r = agent.get("/ready")
    assert r.status_code == 200 and r.json()["reason"] == "serving"
    agent.stop()

    # Knowingly offline: the broker refuses connections, the model is loaded and warm.
    cfg = tomllib.loads(agent.config_path.read_text())
    cfg["mqtt"]["port"] = 9
    agent.config_path.write_text(dump_toml(cfg))
    agent.start()
    r = agent.get("/ready")
    reason = "serving (broker offline: connection refused 127.0.0.1:9)"
    assert r.status_code == 200 and r.json()["reason"] == reason
    status = agent.get("/api/v1/status").json()
    assert status["reason"] == reason
    assert status["broker"] == {"state": "offline", "error": "connection refused 127.0.0.1:9"}


def test_a_broker_that_refuses_the_credentials_says_so(
    agent_factory, device_id, ops_trust, tmp_path
):
    # A broker of its own that wants a password: the agent has none.
    from farmiq_sim.net import free_port
    from tests.support.procs import Mosquitto

    port = free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous false\n"
    broker = Mosquitto(tmp_path / "broker", extra_conf=conf, port=port)
    broker.start()
    try:
        agent = agent_factory(device_id, ops_trust, mqtt={"port": broker.port})
        status = agent.wait_for(lambda s: s["broker"]["error"], what="a broker error")
        assert status["broker"]["state"] == "offline"
        assert status["broker"]["error"] == "refused by the broker: Not authorized"
        r = agent.get("/ready")
        assert r.status_code == 503 and r.json()["reason"] == "no model installed"
    finally:
        broker.stop()


def test_missing_or_broken_trust_root_is_one_line_and_no_restart(tmp_path, device_id):
    import subprocess
    import sys

    from edge_agent.daemon.preflight import SETUP_EXIT_CODE

    trust = tmp_path / "trust_root.json"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        dump_toml(
            {"device_id": device_id, "state_dir": str(tmp_path / "s"), "trust_root": str(trust)}
        )
    )

    def farmiq(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "farmiq", "agent", *args, "-c", str(cfg)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    for content, problem in [
        (None, "file not found"),
        ("{not json", "not JSON"),
        ('{"keys": {}}', "not a trust root"),
    ]:
        if content is not None:
            trust.write_text(content)
        run, check = farmiq("run"), farmiq("check-config")
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
        assert lines[0].startswith(f"farmiq agent: trust root {trust}: ") and problem in lines[0]
        assert run.returncode == SETUP_EXIT_CODE  # RestartPreventExitStatus in the unit
        assert check.returncode == SETUP_EXIT_CODE and check.stderr.strip() == lines[0]


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_metrics_count_inferences_models_and_broker(
    agent_factory, device_id, ops_trust, mqtt_port, barn_bundle, barn_model
):
    agent = agent_factory(device_id, ops_trust)
    _install(agent, mqtt_port, barn_bundle)
    for i in range(5):
        body = {"model": MODEL, "inputs": barn_model.X_test[i : i + 2].tolist(), "cache": False}
        assert agent.post("/api/v1/inference", body).status_code == 200
    assert agent.post("/api/v1/inference", {"model": MODEL, "inputs": [[1.0]]}).status_code == 422
    r = agent.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        _metric(text, "farmiq_agent_inference_latency_seconds_count", model=MODEL, target="edge")
        == 5
    )
    assert _metric(text, "farmiq_agent_request_latency_seconds_count", model=MODEL) == 5
    slow = _metric(
        text, "farmiq_agent_inference_latency_seconds_bucket", model=MODEL, target="edge", le="+Inf"
    )
    assert slow == 5
    assert _metric(text, "farmiq_agent_routing_decisions_total", model=MODEL, target="edge") == 5
    assert _metric(text, "farmiq_agent_inference_rejected_total", model=MODEL) == 1
    assert _metric(text, "farmiq_agent_model_loaded", model=MODEL, version="1") == 1
    assert _metric(text, "farmiq_agent_broker_connected") == 1
    assert _metric(text, "farmiq_agent_ready") == 1
    assert _metric(text, "farmiq_agent_mqtt_reconnects_total") == 0
    assert _metric(text, "farmiq_agent_breaker_state", target="cloud") in (None, 0.0)
    # The process itself (prometheus_client's ProcessCollector on the agent's registry).
    assert (_metric(text, "process_resident_memory_bytes") or 0) > 10 * 2**20
    assert (_metric(text, "process_cpu_seconds_total") or 0) > 0
    assert (_metric(text, "process_open_fds") or 0) > 3


def test_logs_are_json_with_the_request_id(
    agent_factory, device_id, ops_trust, ops_signer, mqtt_port, barn_bundle, barn_model
):
    from farmiq.bundle.builder import build_bundle

    agent = agent_factory(device_id, ops_trust)
    _install(agent, mqtt_port, barn_bundle)
    v2 = build_bundle(
        barn_model.onnx_bytes,
        name=MODEL,
        version=2,
        signers=[ops_signer],
        labels=["off", "low", "high"],
    )
    publish(mqtt_port, topics.down(device_id, topics.BUNDLE), v2)
    agent.wait_for(lambda s: (s["last_install"] or {}).get("version") == 2, what="v2")
    # An operator's rollback: what it logs carries the operator's request id.
    r = httpx.post(
        agent.url + f"/api/v1/models/{MODEL}/rollback",
        headers={"X-Request-Id": "op-rollback-42"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert agent.installed_version(MODEL) == 1
    # Not HTTP at all: the HTTP server's own complaint is a JSON record too.
    import socket

    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
        sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        sock.recv(1024)
    agent.stop()
    text = [line for line in agent.log_text().splitlines() if line.strip()]
    lines = [json.loads(line) for line in text]  # every line the daemon wrote is JSON
    assert lines and all({"ts", "level", "logger", "msg"} <= set(rec) for rec in lines)
    assert any("Invalid HTTP request" in rec["msg"] for rec in lines), lines[-5:]
    tagged = [rec for rec in lines if rec.get("request_id") == "op-rollback-42"]
    assert tagged and any("v1" in rec["msg"] for rec in tagged), lines[-8:]
    assert not any(rec.get("request_id") == "op-rollback-42" for rec in lines if "v2" in rec["msg"])
    assert any(rec["msg"] == "agent stopped" for rec in lines)


def test_sd_notify_path_socket_and_no_socket(tmp_path):
    from edge_agent.daemon.sd_notify import SdNotifier

    assert not SdNotifier(environ={}).ready()  # outside systemd: a quiet no-op
    path = f"/tmp/farmiq-ops-{os.getpid()}.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    try:
        n = SdNotifier(
            environ={
                "NOTIFY_SOCKET": path,
                "WATCHDOG_USEC": "30000000",
                "WATCHDOG_PID": str(os.getpid()),
            }
        )
        assert n.watchdog_interval() == 15.0
        assert n.ready("serving") and n.watchdog()
        assert srv.recv(100) == b"READY=1\nSTATUS=serving"
        assert srv.recv(100) == b"WATCHDOG=1"
        other = SdNotifier(
            environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
        )
        assert other.watchdog_interval() is None  # the watchdog is meant for another process
    finally:
        srv.close()
        os.unlink(path)
    gone = SdNotifier(environ={"NOTIFY_SOCKET": path})
    assert gone.ready() is False  # socket gone: reported, never raised


def test_api_port_taken_is_a_clear_line_and_a_retry(tmp_path, device_id, ops_trust):
    # The port may free up (an old instance still stopping): systemd retries, exit 1.
    import subprocess
    import sys

    from edge_agent.daemon.preflight import SETUP_EXIT_CODE

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        trust = tmp_path / "trust_root.json"
        trust.write_text(json.dumps(ops_trust))
        cfg = tmp_path / "agent.toml"
        conf = {
            "device_id": device_id,
            "state_dir": str(tmp_path / "s"),
            "trust_root": str(trust),
            "api": {"port": port},
            "mqtt": {"port": 9},
        }
        cfg.write_text(dump_toml(conf))
        out = subprocess.run(
            [sys.executable, "-m", "farmiq", "agent", "run", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1 and out.returncode != SETUP_EXIT_CODE
    assert "Traceback" not in out.stderr, out.stderr
    assert f"farmiq agent: local API 127.0.0.1:{port}: " in out.stderr
    assert "address already in use" in out.stderr.splitlines()[-1]


def test_a_broker_whose_certificate_is_not_trusted_says_tls_error(
    agent_factory, device_id, ops_trust, tmp_path
):
    # A TLS broker of fleet A; the agent trusts fleet B's CA: the handshake fails, and
    # the agent says so instead of "broker offline".
    import os

    from farmiq_sim.net import free_port
    from provisioning.fleet import init_fleet
    from provisioning.mosquitto_config import write_mosquitto_config
    from tests.support.procs import Mosquitto

    fleet_a = init_fleet(tmp_path / "a", root_threshold=1, root_keys=1)
    fleet_b = init_fleet(tmp_path / "b", root_threshold=1, root_keys=1)
    port = free_port()
    user = "root" if os.geteuid() == 0 else None
    cfg = write_mosquitto_config(fleet_a.root, tmp_path / "m.conf", port=port, run_as_user=user)
    broker = Mosquitto(tmp_path / "broker", extra_conf=cfg.conf.read_text(), port=port)
    broker.start()
    try:
        mqtt = {"port": port, "tls_ca": str(fleet_b.ca_cert)}
        agent = agent_factory(device_id, ops_trust, mqtt=mqtt)
        status = agent.wait_for(lambda s: s["broker"]["error"], what="a broker error")
        assert status["broker"]["state"] == "offline"
        assert status["broker"]["error"].startswith("TLS error: certificate verify failed")
    finally:
        broker.stop()
