"""Fixtures shared by every test area: real broker, control plane, agents, a barn model."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("FEAST_USAGE", "False")

from farmiq_sim.net import port_open
from tests.support.procs import AgentProc, ControlPlaneProc, Mosquitto

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def mqtt_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The machine's Mosquitto on 1883 when it runs, else a private one."""
    if port_open("127.0.0.1", 1883):
        yield 1883
        return
    broker = Mosquitto(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker.port
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start private brokers with their own config; stopped after the test."""
    started: list[Mosquitto] = []

    def make(extra_conf: str = "", port: int | None = None) -> Mosquitto:
        b = Mosquitto(tmp_path / "brokers", extra_conf, port)
        b.start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, mqtt_port: int
) -> Iterator[ControlPlaneProc]:
    """One real control plane (SQLite + MLflow on SQLite) shared by the session."""
    cp = ControlPlaneProc(tmp_path_factory.mktemp("cp"), mqtt_port)
    cp.start()
    yield cp
    cp.stop()


@pytest.fixture
def device_id() -> str:
    return f"gw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agent_factory(tmp_path: Path, mqtt_port: int) -> Iterator[Callable[..., AgentProc]]:
    started: list[AgentProc] = []

    def make(
        device_id: str, trust_root: dict[str, Any] | Path, *, start: bool = True, **settings: Any
    ) -> AgentProc:
        mqtt = settings.pop("mqtt", {"port": mqtt_port})
        a = AgentProc(
            tmp_path / device_id, device_id, mqtt["port"], trust_root, mqtt=mqtt, **settings
        )
        if start:
            a.start()
        started.append(a)
        return a

    yield make
    for a in started:
        a.stop()
    _clear_retained(mqtt_port, [a.device_id for a in started])


RETAINED_LEAVES = ("up/state", "up/status", "down/desired", "down/trust", "down/features")


def _clear_retained(port: int, device_ids: list[str]) -> None:
    """Tests share the machine's broker, which persists retained messages: clear what each
    test gateway left, so later control planes do not inherit a fleet of ghosts."""
    from farmiq import topics
    from tests.support.mqtt import publish_many

    messages = [(f"{topics.gw(d)}/{leaf}", b"") for d in device_ids for leaf in RETAINED_LEAVES]
    if messages:
        with contextlib.suppress(OSError):
            publish_many(port, messages, retain=True)


@pytest.fixture(scope="session")
def barn_model() -> Any:
    from farmiq_sim.barn_model import train_barn_model

    return train_barn_model(n=2000, seed=1)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
