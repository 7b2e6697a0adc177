"""The agent's side of its microcontrollers: sensor readings into the feature cache,
actuator commands from the cloud to the right MCU and their results back.

Commands arrive on ``down/actuator`` as ``{"command_id", "mcu" (optional), "actuator",
"value"}``; the result goes to ``up/actuator_result`` through the durable outbox, keyed by
command id, so a result is never lost and a redelivered command never runs twice (the MCU
keeps the ids it executed; see docs/mcu-protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from farmiq import topics

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.models.serving import LoadedModel
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
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        await self.manager.start()
        self.agent.models.listeners.append(self._on_model_swap)
        for model in self.agent.models.all():  # installed before this start
            self._spawn_load(model)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.manager.stop()

    # -- the MCU as an inference target (edge_agent/inference/targets/mcu_target.py) -------------
    def has_model(self, model_id: str) -> str | None:
        return self.manager.has_model(model_id)

    async def infer(
        self, device_id: str, model_id: str, inputs: Any, *, timeout: float = 5.0
    ) -> Any:
        return await self.manager.infer(device_id, model_id, inputs, timeout=timeout)

    def _on_model_swap(self, new: LoadedModel, old: LoadedModel | None) -> None:
        # Called from the installer's worker thread: hand over to the event loop.
        self._loop.call_soon_threadsafe(self._spawn_load, new)

    def _spawn_load(self, model: LoadedModel) -> None:
        if model.manifest.runtime != "mcu-tflite":
            return
        task = asyncio.ensure_future(self._load_everywhere(model))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_everywhere(self, model: LoadedModel) -> None:
        """MODEL_LOAD an MCU-sized model onto every attached MCU (atomic commit on each).
        MCUs that are not up yet get it when they appear: retried with backoff."""
        data = (model.path / model.manifest.model_file).read_bytes()
        loaded: set[str] = set()
        delay = 0.5
        for _ in range(12):
            online = [d.device_id for d in self.manager.devices() if d.online]
            for mcu_id in online:
                if mcu_id in loaded:
                    continue
                try:
                    await self.manager.load_model(mcu_id, model.name, data)
                    loaded.add(mcu_id)
                    log.info("model %s v%s loaded on MCU %s", model.name, model.version, mcu_id)
                except Exception as exc:
                    log.warning("MODEL_LOAD of %s on %s failed: %s", model.name, mcu_id, exc)
            if online and loaded >= set(online):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def on_readings(self, mcu_id: str, readings: list[Reading]) -> None:
        rows = [
            (self.barn_id, SENSOR_MAP.get(r.sensor, r.sensor), r.timestamp, r.value)
            for r in readings
        ]
        # SQLite commit off the event loop; one transaction per batch.
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
        await self.agent.outbox.aput(
            topics.up(self.agent.device_id, topics.ACTUATOR_RESULT),
            orjson.dumps({**result, "key": key}),
            key,
        )
