"""Fixtures for rollout tests: a control plane tuned for fast ticks and small chunks, a
registered model with three versions, and a simulated fleet running in a thread."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from farmiq.bundle.trust import TrustRoot
from farmiq_sim.fleet.fleet import Fleet, FleetConfig
from tests.support.procs import ENV, ControlPlaneProc

MODEL = "barn-ventilation"
FAST_ENV = {
    "FARMIQ_ROLLOUT_TICK_S": "0.2",
    "FARMIQ_ROLLOUT_CHUNK_SIZE": "4096",  # several chunks even for the small test model
    "FARMIQ_ROLLOUT_RESEND_S": "3",
}


def start_cp(workdir: Path, mqtt_port: int, replica: str = "", **settings: Any) -> ControlPlaneProc:
    cp = ControlPlaneProc(workdir, mqtt_port, **settings)
    cp.env = {**ENV, **FAST_ENV, "FARMIQ_ROLLOUT_REPLICA": replica or f"cp-{cp.port}"}
    cp.start()
    return cp


def register_versions(cp: ControlPlaneProc, n: int = 3) -> list[int]:
    from farmiq_sim.barn_model import train_barn_model

    meta = {
        "task": "classification",
        "labels": ["off", "low", "high"],
        "feature_names": ["temperature_c", "humidity_pct", "ammonia_ppm", "co2_ppm"],
    }
    out = []
    with cp.client() as c:
        for seed in range(n):
            m = train_barn_model(n=600, seed=seed)
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", m.onnx_bytes)},
                data={"name": MODEL, "meta": json.dumps(meta)},
            )
            assert r.status_code == 200, r.text
            out.append(r.json()["version"])
    return out


@pytest.fixture(scope="module")
def rollout_cp(
    tmp_path_factory: pytest.TempPathFactory, mqtt_port: int
) -> Iterator[ControlPlaneProc]:
    cp = start_cp(tmp_path_factory.mktemp("rollout-cp"), mqtt_port)
    cp.versions = register_versions(cp)  # type: ignore[attr-defined]
    yield cp
    cp.stop()


class FleetThread:
    """A simulated fleet on its own event loop in a thread (tests stay synchronous)."""

    def __init__(self, cfg: FleetConfig, trust: TrustRoot) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fleet = Fleet(cfg, trust)
        self.call(self.fleet.start(), timeout=60)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def versions(self) -> dict[int | None, int]:
        async def get() -> dict[int | None, int]:
            return dict(self.fleet.versions())

        return self.call(get())  # type: ignore[no-any-return]

    def gateway(self, device_id: str) -> Any:
        return next(g for g in self.fleet.gateways if g.device_id == device_id)

    def stop(self) -> None:
        self.call(self.fleet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fleet_factory(mqtt_port: int) -> Iterator[Callable[..., FleetThread]]:
    made: list[FleetThread] = []

    def make(cp: ControlPlaneProc, **kw: Any) -> FleetThread:
        trust = TrustRoot.parse(json.dumps(cp.trust_root()).encode())
        kw.setdefault("port", mqtt_port)
        f = FleetThread(FleetConfig(**kw), trust)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def wait_rollout(
    cp: ControlPlaneProc,
    rid: str,
    pred: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
    what: str = "rollout state",
) -> dict[str, Any]:
    deadline = time.time() + timeout
    doc: dict[str, Any] = {}
    with cp.client() as c:
        while time.time() < deadline:
            doc = c.get(f"/api/v1/rollouts/{rid}").json()
            if pred(doc):
                return doc
            time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {json.dumps(doc)[:2000]}")


def wait_devices_known(cp: ControlPlaneProc, prefix: str, n: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    with cp.client() as c:
        while time.time() < deadline:
            devs = c.get("/api/v1/devices", params={"tag": prefix}).json()["devices"]
            if len(devs) >= n:
                return
            time.sleep(0.2)
    raise AssertionError(f"only {len(devs)} of {n} devices registered")
