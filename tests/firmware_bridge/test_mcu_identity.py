"""A port whose MCU reboots as another identity; what the manager reports about its MCUs."""

from __future__ import annotations

import asyncio
import time

import pytest
from mcu_helpers import SimFactory
from prometheus_client import CollectorRegistry, generate_latest

from firmware_bridge.manager import DeviceUnavailable, MCUManager
from firmware_bridge.messages import command_hash


async def wait_until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_mcu_rebooted_as_another_id_never_runs_the_old_ones_commands(
    make_sim: SimFactory, manager: MCUManager
) -> None:
    sim = await make_sim("pen-old")
    await manager.add_port(sim.path)
    await manager.wait_for_device("pen-old", 5)
    # the command for pen-old is in flight (unacknowledged) when the board is reflashed
    sim.faults.rx_drop = 1.0
    cmd = asyncio.create_task(manager.send_actuator("pen-old", "fan", 1.0, "old-1", timeout=2))
    await asyncio.sleep(0.2)
    sim.device_id = "pen-new"
    sim.faults.rx_drop = 0.0
    sim.reset()  # same port, same pty: a new identity boots
    await manager.wait_for_device("pen-new", 5)
    with pytest.raises(DeviceUnavailable):
        await cmd
    assert command_hash("old-1") not in sim.executions  # never ran on the new MCU
    # right away, one MCU is online on the gateway: a command that names none goes there
    online = [d.device_id for d in manager.devices() if d.online]
    assert online == ["pen-new"]
    described = {d["id"]: d for d in manager.describe()}
    assert described["pen-old"]["online"] is False and described["pen-old"]["port"] is None
    assert described["pen-old"]["link"]["identity_changes"] == 1
    res = await manager.send_actuator("pen-new", "heater", 0.5, "new-1")
    assert res.ok and sim.executions[command_hash("new-1")] == 1


async def test_describe_reports_identity_budget_models_and_link_health(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    sim = await make_sim("pen-d", arena_capacity=12 * 1024)
    await manager.add_port(sim.path)
    await manager.wait_for_device("pen-d", 5)
    await manager.load_model("pen-d", "vent", tiny_model)
    (d,) = manager.describe()
    assert d["id"] == "pen-d" and d["firmware"] == "sim-1.0.0" and d["online"] is True
    assert d["port"] == sim.path and len(d["boot_id"]) == 8
    assert d["budget"] == {
        "model_slot_bytes": 65536, "arena_bytes": 12288, "model_slots": 0, "max_frame": 512,
    }  # fmt: skip
    import hashlib

    assert d["models"] == [{"model_id": "vent", "sha256": hashlib.sha256(tiny_model).hexdigest()}]
    link = d["link"]
    assert link["connected"] and link["frames_sent"] > 0 and link["last_seen_s"] < 3
    assert set(d["capabilities"]) == {"readings", "actuators", "model_load", "infer"}
    import orjson

    orjson.dumps(manager.describe())  # JSON-ready as it is


async def test_readings_dropped_on_a_full_queue_are_counted_in_a_metric(
    make_sim: SimFactory,
) -> None:
    stall = asyncio.Event()

    async def slow_consumer(device_id: str, batch: list) -> None:  # type: ignore[type-arg]
        await stall.wait()

    mgr = MCUManager(on_readings=slow_consumer, ack_timeout=0.05)
    mgr._readings_q = asyncio.Queue(maxsize=2)  # a tiny queue so it fills in a second
    await mgr.start()
    try:
        sim = await make_sim("pen-q", reading_interval=0.01)
        await mgr.add_port(sim.path)
        await mgr.wait_for_device("pen-q", 5)
        await wait_until(lambda: mgr.readings_dropped > 0)
        registry = CollectorRegistry()
        registry.register(mgr.collector())
        text = generate_latest(registry).decode()
        line = next(
            x for x in text.splitlines() if x.startswith("farmiq_mcu_readings_dropped_total")
        )
        assert 'mcu="pen-q"' in line and float(line.split()[-1]) >= 1
        assert mgr.describe()[0]["link"]["readings_dropped"] == mgr.readings_dropped
    finally:
        stall.set()
        await mgr.stop()
