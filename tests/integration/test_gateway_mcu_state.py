"""The gateway reports its MCUs: a real agent with a simulated MCU on a pty shows it in
``GET /api/v1/resources/status``, in the retained ``up/state`` and on ``/metrics``."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from farmiq import topics
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot
from farmiq.wire import ReportedState
from farmiq_sim.mcu.simulator import MCUSimulator
from tests.support.mqtt import retained


async def test_mcus_appear_in_resources_state_and_metrics(
    agent_factory, device_id, mqtt_port, tmp_path
):
    trust = TrustRoot.for_signers([Signer.generate()]).model_dump(mode="json")
    sim = MCUSimulator(
        "mcu-coop-3", reading_interval=0.1, link_path=str(tmp_path / "mcu"), fw_version="sim-2.4.1"
    )
    path = await sim.start()
    try:
        agent = await asyncio.to_thread(agent_factory, device_id, trust, mcu_ports=[path])
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as c:
            deadline = time.time() + 30
            while True:
                res = (await c.get("/api/v1/resources/status")).json()
                devices = res["links"]["mcu"]["devices"]
                if (devices and devices[0].get("online")) or time.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert res["links"]["mcu"]["configured"] is True
            assert len(devices) == 1, devices
            mcu = devices[0]
            assert mcu["id"] == "mcu-coop-3" and mcu["firmware"] == "sim-2.4.1", mcu
            assert mcu["online"] is True and mcu["port"] == path
            assert mcu["budget"]["model_slot_bytes"] == 64 * 1024
            assert mcu["link"]["connected"] is True and mcu["link"]["frames_received"] > 0

            metrics = (await c.get("/metrics")).text
            assert 'farmiq_mcu_online{mcu="mcu-coop-3"} 1.0' in metrics
            assert 'farmiq_mcu_readings_dropped_total{mcu="mcu-coop-3"} 0.0' in metrics

        # The retained up/state names the MCU too (published again once it came online).
        def state_with_mcu() -> dict | None:
            raw = retained(mqtt_port, topics.up(device_id, topics.STATE), timeout=2)
            doc = json.loads(raw) if raw else None
            return doc if doc and doc.get("mcus") and doc["mcus"][0]["online"] else None

        deadline = time.time() + 20
        doc = await asyncio.to_thread(state_with_mcu)
        while doc is None and time.time() < deadline:
            await asyncio.sleep(0.3)
            doc = await asyncio.to_thread(state_with_mcu)
        assert doc is not None, "no up/state with an online MCU"
        state = ReportedState.model_validate(doc)  # the control plane's wire model
        assert [(m.id, m.firmware, m.online) for m in state.mcus] == [
            ("mcu-coop-3", "sim-2.4.1", True)
        ]
        assert "retransmits" in state.mcus[0].link

        # Unplugged: the state says offline.
        await sim.stop()
        deadline = time.time() + 20
        while time.time() < deadline:
            raw = await asyncio.to_thread(
                retained, mqtt_port, topics.up(device_id, topics.STATE), 2
            )
            if raw and json.loads(raw)["mcus"][0]["online"] is False:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("up/state never said the unplugged MCU was offline")
    finally:
        await sim.stop()
