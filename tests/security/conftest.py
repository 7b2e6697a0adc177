"""Fixtures for the security suite: a fleet, a real mutual-TLS mosquitto, MQTT clients."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from provisioning.fleet import FleetPaths, init_fleet
from provisioning.keyfiles import new_ec_key, write_cert, write_private_key
from provisioning.mosquitto_config import MosquittoConfig, write_mosquitto_config

CONNECT_TIMEOUT_S = 3.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPaths:
    return init_fleet(tmp_path_factory.mktemp("fleet") / "fleet", root_threshold=2, root_keys=3)


@dataclass
class Broker:
    proc: subprocess.Popen[bytes]
    config: MosquittoConfig
    port: int
    log: Path

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads the ACL (applied to live clients) and the CRL."""
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.4)


@pytest.fixture(scope="module")
def broker(fleet: FleetPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    work = tmp_path_factory.mktemp("broker")
    port = free_port()
    user = "root" if os.geteuid() == 0 else None  # keep privileges to read the 0600 key
    cfg = write_mosquitto_config(fleet.root, work / "mosquitto.conf", port=port, run_as_user=user)
    log = work / "mosquitto.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(cfg.conf)], stdout=fh, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {log.read_text()}") from None
            time.sleep(0.05)
    yield Broker(proc, cfg, port, log)
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass
class Identity:
    name: str
    cert: Path
    key: Path
    serial: int = 0


def make_identity(fleet: FleetPaths, directory: Path, name: str) -> Identity:
    """A device identity issued straight by the fleet CA (enrollment is tested separately)."""
    key = new_ec_key()
    cert = fleet.ca().issue(key.public_key(), name)
    directory.mkdir(parents=True, exist_ok=True)
    write_private_key(directory / f"{name}.key", key)
    write_cert(directory / f"{name}.crt", cert)
    return Identity(name, directory / f"{name}.crt", directory / f"{name}.key", cert.serial_number)


@dataclass
class Client:
    client: mqtt.Client
    connack: object | None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connected(self) -> bool:
        return self.connack is not None and not getattr(self.connack, "is_failure", True)

    def messages(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int,
    ca: Path,
    identity: Identity | None,
    client_id: str,
    *,
    timeout: float = CONNECT_TIMEOUT_S,
) -> Client:
    """Connect with TLS (client cert when ``identity``); ``connack`` is None when the broker
    never answered (paho raises nothing for a refused certificate, so we time out ourselves)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if identity is None:
        c.tls_set(ca_certs=str(ca))
    else:
        c.tls_set(ca_certs=str(ca), certfile=str(identity.cert), keyfile=str(identity.key))
    state = Client(c, None)
    done = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        state.connack = rc
        done.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with state.lock:
            state.received.append((msg.topic, bytes(msg.payload)))

    c.on_connect = on_connect
    c.on_message = on_message
    try:
        c.connect("127.0.0.1", port, keepalive=30)
    except OSError:  # TLS handshake refused synchronously
        return state
    c.loop_start()
    done.wait(timeout)
    if not done.is_set():
        c.loop_stop()
    return state


def wait_for(predicate, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())
