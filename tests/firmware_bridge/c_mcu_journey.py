"""One journey the gateway's bridge runs against any C-firmware MCU (host build or QEMU):
readings, an idempotent actuator command, a refused model, a model load and inferences that
match the host runtime within the quantisation tolerance."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter

import numpy as np
import pytest
from mcu_helpers import Collector, assert_within_quantization, local_litert, vent_rows

from firmware_bridge.manager import InferenceError, MCUManager, ModelBudgetError, ModelLoadError
from firmware_bridge.messages import ActuatorStatus


async def run_journey(port: str, device_id: str, model: bytes, *, min_readings: int = 20) -> dict:
    col = Collector()
    mgr = MCUManager([port], on_readings=col, ack_timeout=0.1)
    await mgr.start()
    try:
        info = await mgr.wait_for_device(device_id, 15)
        assert info.fw_version == "c-ref-2.0" and info.max_frame == 256
        assert (info.model_capacity, info.arena_capacity, info.model_slots) == (32768, 16384, 2)
        deadline = time.monotonic() + 15
        while len(col.readings) < min_readings and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(col.readings) >= min_readings
        assert {r.sensor for r in col.readings} == {"temperature_c", "humidity_pct"}
        assert not [k for k, n in Counter(col.keys()).items() if n > 1]
        seqs = sorted(r.mcu_seq for r in col.readings)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing twice
        # actuator: runs once, a re-send answers the stored result
        r1 = await mgr.send_actuator(device_id, "heater", 0.5, "c-heat-1")
        r2 = await mgr.send_actuator(device_id, "heater", 0.5, "c-heat-1")
        assert r1.ok and not r1.duplicate and r1.applied_value == 0.5
        assert r2.ok and r2.duplicate
        bad = await mgr.send_actuator(device_id, "fan", 1.5, "c-fan-bad", timeout=5)
        assert bad.status == ActuatorStatus.OUT_OF_RANGE and not bad.ok
        # a model over the declared slot is refused on the gateway, before any transfer
        with pytest.raises(ModelBudgetError, match="32768-byte model slot"):
            await mgr.load_model(device_id, "big", model + bytes(32768))
        # the MCU checks the hash itself and keeps nothing that fails
        with pytest.raises(InferenceError, match="NO_MODEL"):
            await mgr.infer(device_id, "vent", np.zeros(4, np.float32))
        t0 = time.monotonic()
        await mgr.load_model(device_id, "vent", model, timeout=30)
        load_s = time.monotonic() - t0
        x = vent_rows(60, seed=3)
        got = await mgr.infer(device_id, "vent", x)
        want = local_litert(model, x)
        assert_within_quantization(got, want)
        # and TFLite Micro's own kernels, which the C interpreter follows, give the same bits
        from farmiq_sim.mcu.tflm_runner import MicroModel

        np.testing.assert_array_equal(got, MicroModel(model, 16384).run(x))
        assert got[:, 1].min() < 0.5 < got[:, 1].max()  # it discriminates
        with pytest.raises(InferenceError, match="BAD_SHAPE"):
            await mgr.infer(device_id, "vent", np.ones(3, np.float32))
        # a second version goes to the other slot and switches atomically
        await mgr.load_model(device_id, "vent", model, timeout=30)
        assert_within_quantization(await mgr.infer(device_id, "vent", x[:5]), want[:5])
        (d,) = mgr.describe()
        sha = hashlib.sha256(model).hexdigest()
        assert d["models"] == [{"model_id": "vent", "sha256": sha}]
        assert [(s["model_id"], s["active"]) for s in d["slots"]] == [
            ("vent", True),
            ("vent", False),
        ]
        # a different model takes the older slot: the first "vent" is gone, the new one stays
        await mgr.load_model(device_id, "vent-b", model, timeout=30)
        assert [s["model_id"] for s in mgr.describe()[0]["slots"]] == ["vent-b", "vent"]
        await mgr.load_model(device_id, "vent-c", model, timeout=30)
        assert mgr.has_model("vent") is None and mgr.has_model("vent-b") == device_id
        with pytest.raises(InferenceError, match="NO_MODEL"):
            await mgr.infer(device_id, "vent", x[0])
        assert_within_quantization(await mgr.infer(device_id, "vent-c", x[:3]), want[:3])
        d = mgr.describe()[0]
        assert d["online"] and d["link"]["bad_frames"] == 0
        return {"load_s": load_s, "max_diff": float(np.abs(got - want).max())}
    except ModelLoadError:
        raise
    finally:
        await mgr.stop()
