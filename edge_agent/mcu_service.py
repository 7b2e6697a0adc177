"""The agent's side of its microcontrollers: sensor readings into the feature cache,
actuator commands from the cloud to the right MCU and their results back.

Commands arrive on ``down/actuator`` as ``{"command_id", "mcu" (optional), "actuator",
"value"}``; the result goes to ``up/actuator_result`` through the durable outbox, keyed by
command id, so a result is never lost and a redelivered command never runs twice (the MCU
keeps the ids it executed; see docs/mcu-protocol.md).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from farmiq import topics

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from firmware_bridge.messages import Reading

log = logging.getLogger(__name__)

# MCU sensor names (firmware_bridge.messages.SENSOR_NAMES) -> feature-definition sensors
# (farmiq/features/barn.py). Units are the same; only the names differ.
SENSOR_MAP = {
    "temperature_c": "temperature",
    "humidity_pct": "humidity",
    "nh3_ppm": "ammonia",
    "co2_ppm": "co2",
    "water_l_min": "water_flow",
    "feed_kg_h": "feed_flow",
}


class McuService:
    def __init__(self, agent: Agent) -> None:
        from firmware_bridge.manager import MCUManager

        self.agent = agent
        self.barn_id = agent.config.barn_id
        self.manager = MCUManager(agent.config.mcu_ports, on_readings=self.on_readings)
        self.readings_ingested = 0

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()

    async def on_readings(self, mcu_id: str, readings: list[Reading]) -> None:
        rows = [
            (self.barn_id, SENSOR_MAP.get(r.sensor, r.sensor), r.timestamp, r.value)
            for r in readings
        ]
        # SQLite commit off the event loop; one transaction per batch.
        import asyncio

        result = await asyncio.to_thread(self.agent.features.ingest, rows)
        self.readings_ingested += result.accepted

    async def handle_command(self, payload: bytes) -> None:
        try:
            cmd = orjson.loads(payload)
            command_id = str(cmd["command_id"])
            actuator = str(cmd["actuator"])
            value = float(cmd["value"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("malformed actuator command ignored: %s", exc)
            return
        mcu_id = cmd.get("mcu")
        result: dict[str, Any] = {"command_id": command_id, "actuator": actuator, "value": value}
        try:
            if mcu_id is None:
                devices = [d for d in self.manager.devices() if d.online]
                if len(devices) != 1:
                    raise LookupError(f"name the MCU: {len(devices)} online")
                mcu_id = devices[0].device_id
            res = await self.manager.send_actuator(mcu_id, actuator, value, command_id)
            result.update(
                mcu=mcu_id, ok=res.ok, status=res.status.name.lower(),
                applied_value=res.applied_value, duplicate=res.duplicate,
            )  # fmt: skip
        except Exception as exc:  # unknown actuator, MCU unplugged, timeout
            result.update(mcu=mcu_id, ok=False, status="error", error=str(exc))
        result["ts"] = time.time()
        key = f"{self.agent.device_id}/actuator/{command_id}"
        self.agent.outbox.put(
            topics.up(self.agent.device_id, topics.ACTUATOR_RESULT),
            orjson.dumps({**result, "key": key}),
            key,
        )
