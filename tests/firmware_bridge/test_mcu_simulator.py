"""The bridge against the simulated MCU: readings, commands and model loads under faults."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest
from mcu_helpers import Collector, SimFactory, assert_within_quantization, local_litert, vent_rows

from farmiq_sim.mcu.simulator import FaultConfig
from firmware_bridge.manager import InferenceError, MCUManager, ModelBudgetError, ModelLoadError
from firmware_bridge.messages import command_hash
from firmware_bridge.tflite_model import model_needs


def noisy(**extra: float) -> FaultConfig:
    """Every kind of line noise at 10 % per frame."""
    cfg = FaultConfig(garbage=0.1, drop=0.1, corrupt=0.1, rx_drop=0.1, rx_corrupt=0.1, seed=3)
    for k, v in extra.items():
        setattr(cfg, k, v)
    return cfg


async def wait_until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def assert_no_double_count(col: Collector) -> None:
    counts = Counter(col.keys())
    dupes = [k for k, n in counts.items() if n > 1]
    assert not dupes, f"readings delivered twice: {dupes[:5]}"


async def test_readings_flow_with_gateway_timestamps(
    make_sim: SimFactory, manager: MCUManager, collector: Collector
) -> None:
    sim = await make_sim("barn-1")
    await manager.add_port(sim.path)
    info = await manager.wait_for_device("barn-1", 5)
    assert info.online and info.fw_version == sim.fw_version
    await wait_until(lambda: len(collector.readings) >= 30)
    now = time.time()
    sensors = {r.sensor for r in collector.readings}
    assert {"temperature_c", "humidity_pct", "nh3_ppm", "co2_ppm", "water_l_min"} <= sensors
    assert all(abs(r.timestamp - now) < 2.0 for r in collector.readings)
    temps = [r.value for r in collector.readings if r.sensor == "temperature_c"]
    assert all(5 < t < 40 for t in temps)
    seqs = [r.mcu_seq for r in collector.readings]
    assert seqs == sorted(seqs)
    assert_no_double_count(collector)


async def test_noisy_link_never_double_counts_readings(
    make_sim: SimFactory, manager: MCUManager, collector: Collector
) -> None:
    sim = await make_sim("noisy", noisy(replay=0.3))
    await manager.add_port(sim.path)
    await manager.wait_for_device("noisy", 10)
    await wait_until(lambda: len(collector.readings) >= 120, timeout=20)
    assert_no_double_count(collector)
    emitted = set(sim.readings_emitted)
    assert {r.mcu_seq for r in collector.readings} <= emitted
    link = manager._links[sim.path]
    # the faults really happened, and the link recovered from them
    assert link.endpoint.decoder.stats.errors > 0
    assert link.endpoint.stats.duplicates > 0 or sim.faults.replay


async def test_actuator_runs_once_despite_faults_and_reset(
    make_sim: SimFactory, manager: MCUManager
) -> None:
    sim = await make_sim("act", noisy())
    await manager.add_port(sim.path)
    await manager.wait_for_device("act", 10)
    ids = [f"cmd-{i}" for i in range(10)]
    results = await asyncio.gather(
        *(manager.send_actuator("act", "fan", 0.5, cid, timeout=20) for cid in ids)
    )
    assert all(r.ok for r in results)
    assert all(sim.executions[command_hash(c)] == 1 for c in ids)
    assert sim.barn.fan == pytest.approx(0.5)

    sim.reset()  # the MCU reboots; its command ring is in flash
    again = await manager.send_actuator("act", "fan", 0.5, ids[0], timeout=20)
    assert again.duplicate and again.ok
    assert sim.executions[command_hash(ids[0])] == 1
    assert sim.barn.fan == 0.0  # actuators come up off after a reset, and were not re-run

    bad = await manager.send_actuator("act", "heater", 5.0, "too-hot", timeout=20)
    assert not bad.ok and bad.status.name == "OUT_OF_RANGE"
    with pytest.raises(ValueError):
        await manager.send_actuator("act", "rocket", 1.0, "x")


async def test_unplug_replug_during_commands_and_readings(
    make_sim: SimFactory, manager: MCUManager, collector: Collector
) -> None:
    sim = await make_sim("plug")
    await manager.add_port(sim.path)  # the stable by-id symlink, like /dev/serial/by-id
    first = await manager.wait_for_device("plug", 5)
    await wait_until(lambda: len(collector.readings) >= 12)
    old_tty = sim._slave_name

    # a command is in flight when the cable goes
    await sim.unplug()
    pending = asyncio.create_task(
        manager.send_actuator("plug", "feeder", 1.0, "feed-1", timeout=15)
    )
    await asyncio.sleep(0.3)
    assert not manager.devices()[0].online or not pending.done()
    await sim.replug()
    result = await pending
    assert result.ok and not result.duplicate
    assert sim.executions[command_hash("feed-1")] == 1
    info = await manager.wait_for_device("plug", 5)
    assert info.boot_id != first.boot_id  # it rebooted (power came with the cable)
    assert len(manager.devices()) == 1  # same identity, whatever the tty number
    n = len(collector.readings)
    await wait_until(lambda: len(collector.readings) >= n + 12)
    boots = {r.boot_id for r in collector.readings}
    assert boots == {first.boot_id, info.boot_id}
    assert_no_double_count(collector)
    assert sim._slave_name and old_tty  # both sides had a pty


async def test_model_load_and_infer_match_local_litert(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    sim = await make_sim("infer", FaultConfig(drop=0.05, rx_drop=0.05, seed=5))
    await manager.add_port(sim.path)
    await manager.wait_for_device("infer", 10)
    assert manager.has_model("vent") is None
    await manager.load_model("infer", "vent", tiny_model, timeout=30)
    assert sim.models["vent"] == tiny_model
    assert manager.has_model("vent") == "infer"
    x = vent_rows(40)
    got = await manager.infer("infer", "vent", x)
    assert_within_quantization(got, local_litert(tiny_model, x))  # TFLite Micro vs LiteRT
    one = await manager.infer("infer", "vent", x[0])
    assert one.shape == (2,)
    assert got[:, 1].min() < 0.5 < got[:, 1].max()  # the model does discriminate
    with pytest.raises(InferenceError):
        await manager.infer("infer", "missing", x[0])
    with pytest.raises(InferenceError):
        await manager.infer("infer", "vent", np.ones(3, np.float32))


async def test_model_load_survives_reset_mid_transfer(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    sim = await make_sim("reset", FaultConfig(reset_after_chunks=3))
    await manager.add_port(sim.path)
    await manager.wait_for_device("reset", 5)
    boots = sim.boots
    await manager.load_model("reset", "vent", tiny_model, timeout=30)
    assert sim.boots == boots + 1  # it did reset in the middle
    assert sim.models == {"vent": tiny_model}  # and the commit is whole


async def test_failed_load_leaves_previous_model_untouched(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    sim = await make_sim("atomic")
    await manager.add_port(sim.path)
    await manager.wait_for_device("atomic", 5)
    await manager.load_model("atomic", "vent", tiny_model)

    sim.faults.corrupt_staging = True  # the MCU's flash damages the staged copy
    v2 = tiny_model[:-1] + bytes([tiny_model[-1] ^ 1])
    with pytest.raises(ModelLoadError, match="HASH_MISMATCH"):
        await manager.load_model("atomic", "vent", v2)
    sim.faults.corrupt_staging = False
    assert sim.models["vent"] == tiny_model

    chunks = sim.chunks_seen
    # refused on the gateway, before a byte goes out: not a model, or over the slot
    with pytest.raises(ModelBudgetError, match="not an MCU model"):
        await manager.load_model("atomic", "junk", b"\x01" * 3000)
    huge = tiny_model + b"\x00" * sim.model_capacity
    with pytest.raises(ModelBudgetError, match="does not fit the 65536-byte model slot"):
        await manager.load_model("atomic", "huge", huge)
    assert sim.chunks_seen == chunks
    # the MCU checks again: TFLite Micro cannot prepare it in what is left of its RAM
    sim.arena_capacity = 1024
    with pytest.raises(ModelLoadError, match="INVALID_MODEL"):
        await manager.load_model("atomic", "vent2", tiny_model)
    assert set(sim.models) == {"vent"}
    x = np.array([30, 60, 30, 3.5], np.float32)
    assert_within_quantization(
        (await manager.infer("atomic", "vent", x))[None], local_litert(tiny_model, x[None])
    )


async def test_model_needing_more_arena_than_declared_is_refused_before_transfer(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    from farmiq_sim.mcu.tflm_runner import arena_needed

    needs = model_needs(tiny_model)
    tflm = arena_needed(tiny_model)
    assert tflm <= needs.arena_bytes  # the gateway's estimate bounds TFLite Micro's plan
    sim = await make_sim("small-ram", arena_capacity=needs.arena_bytes - 16)
    await manager.add_port(sim.path)
    await manager.wait_for_device("small-ram", 5)
    info = next(d for d in manager.describe() if d["id"] == "small-ram")
    assert info["budget"]["arena_bytes"] == needs.arena_bytes - 16
    with pytest.raises(
        ModelBudgetError, match=f"needs up to {needs.arena_bytes} bytes of tensor arena"
    ):
        await manager.load_model("small-ram", "vent", tiny_model)
    assert sim.chunks_seen == 0 and sim.models == {}


async def test_unplug_during_model_load_commits_whole_or_not_at_all(
    make_sim: SimFactory, manager: MCUManager, tiny_model: bytes
) -> None:
    sim = await make_sim("yank", FaultConfig(slow_bps=2000))
    await manager.add_port(sim.path)
    await manager.wait_for_device("yank", 5)
    load = asyncio.create_task(manager.load_model("yank", "vent", tiny_model, timeout=8))
    await wait_until(lambda: sim.chunks_seen >= 1, timeout=5)
    await sim.unplug()
    assert "vent" not in sim.models
    await asyncio.sleep(0.3)
    await sim.replug()
    try:
        await load
    except ModelLoadError:
        assert "vent" not in sim.models
    else:
        assert sim.models["vent"] == tiny_model


async def test_two_mcus_are_told_apart_by_hello(
    make_sim: SimFactory, manager: MCUManager, collector: Collector
) -> None:
    a = await make_sim("pen-a")
    b = await make_sim("pen-b")
    await manager.add_port(a.path)
    await manager.add_port(b.path)
    await manager.wait_for_device("pen-a", 5)
    await manager.wait_for_device("pen-b", 5)
    await manager.send_actuator("pen-b", "heater", 0.8, "heat-b")
    assert b.executions[command_hash("heat-b")] == 1
    assert not a.executions
    await wait_until(lambda: {r.device_id for r in collector.readings} == {"pen-a", "pen-b"})
    assert sorted(i.device_id for i in manager.devices()) == ["pen-a", "pen-b"]
