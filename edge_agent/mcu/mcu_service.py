"""The agent's side of its microcontrollers: sensor readings into the feature cache,
actuator commands from the cloud to the right MCU and their results back.

Commands arrive on ``down/actuator`` as ``{"command_id", "mcu" (optional), "actuator",
"value"}``; the result goes to ``up/actuator_result`` through the durable outbox, keyed by
command id, so a result is never lost and a redelivered command never runs twice (the MCU
keeps the ids it executed; see docs/mcu-protocol.md).

It gets narrow ports: the feature cache's ``ingest``, the outbox's ``aput`` and the model
events (an MCU-sized model installed on the gateway is loaded onto every MCU). The
``MCUManager`` it owns is also handed, directly, to the router's MCU target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.models.events import ModelEvents, ModelSwap
from edge_agent.models.serving import LoadedModel, ModelSet
from edge_agent.uplink.backoff import Backoff
from farmiq import topics

if TYPE_CHECKING:
    from firmware_bridge.messages import Reading

# feature_cache.FeatureCache.ingest: rows (barn, sensor, ts, value) -> result with .accepted
Ingest = Callable[[list[tuple[str, str, float, float]]], Any]
# uplink.outbox.Outbox.aput: (topic, payload, key)
OutboxPut = Callable[[str, bytes, str], Awaitable[Any]]

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
    def __init__(
        self,
        ports: Sequence[str],
        *,
        device_id: str,
        barn_id: str,
        ingest: Ingest,
        outbox_put: OutboxPut,
        models: ModelSet,
        events: ModelEvents,
        on_change: Callable[[], Awaitable[None]] | None = None,
        watch_interval_s: float = 2.0,
    ) -> None:
        from firmware_bridge.manager import MCUManager

        self.device_id = device_id
        self.barn_id = barn_id
        self._ingest = ingest
        self._outbox_put = outbox_put
        self._models = models
        self.manager = MCUManager(list(ports), on_readings=self.on_readings)
        self.readings_ingested = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._on_change = on_change
        self._watch_interval_s = watch_interval_s
        events.subscribe(self._on_model_swap)

    async def start(self) -> None:
        await self.manager.start()
        self._started = True
        for model in self._models.all():  # installed before this start
            self._spawn_load(model)
        if self._on_change is not None:
            task = asyncio.ensure_future(self._watch())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def devices(self) -> list[Any]:
        return list(self.manager.devices())

    def describe(self) -> list[dict[str, Any]]:
        """Each MCU, JSON-ready (docs/mcu-protocol.md section 5): resources/status, up/state."""
        return self.manager.describe()

    @staticmethod
    def _identity(described: list[dict[str, Any]]) -> list[Any]:
        # What the cloud must hear about at once: an MCU appears, goes on/offline, reboots,
        # changes firmware or models. Link counters change all the time and ride along.
        return [
            (d["id"], d["firmware"], d["boot_id"], d["online"], d["models"], d["slots"])
            for d in described
        ]

    async def _watch(self) -> None:
        """Publish the reported state again when what ``_identity`` covers changes. The
        manager has no change callback; a look every couple of seconds costs nothing."""
        assert self._on_change is not None
        seen: list[Any] = []
        while True:
            await asyncio.sleep(self._watch_interval_s)
            try:
                now = self._identity(self.describe())
                if now != seen:
                    seen = now
                    await self._on_change()
            except Exception as exc:  # never let the watcher die: the next look retries
                log.warning("MCU state publish failed: %s", exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.manager.stop()

    def _on_model_swap(self, swap: ModelSwap) -> None:  # on the event loop
        if swap.new is not None and self._started:
            self._spawn_load(swap.new)

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
        backoff = Backoff(0.5, 10.0)
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
            await asyncio.sleep(backoff.next())

    async def on_readings(self, mcu_id: str, readings: list[Reading]) -> None:
        rows = [
            (self.barn_id, SENSOR_MAP.get(r.sensor, r.sensor), r.timestamp, r.value)
            for r in readings
        ]
        # SQLite commit off the event loop; one transaction per batch.
        result = await asyncio.to_thread(self._ingest, rows)
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
        key = f"{self.device_id}/actuator/{command_id}"
        await self._outbox_put(
            topics.up(self.device_id, topics.ACTUATOR_RESULT),
            orjson.dumps({**result, "key": key}),
            key,
        )
