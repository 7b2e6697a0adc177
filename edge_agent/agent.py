"""The gateway daemon: serves installed models, installs bundles pushed over MQTT, and
keeps working with no link to the cloud.

Start-up order: load every installed model from disk (verified again), open the local API,
then connect to the broker in the background. The agent serves from the first second even
when the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import platform
import time
from typing import Any

import orjson

from edge_agent.api_routes import build_api
from edge_agent.config import AgentConfig
from edge_agent.drift_reporter import DriftReporter
from edge_agent.feature_cache import FeatureCache
from edge_agent.installer import Installer, InstallResult
from edge_agent.lifecycle import Lifecycle
from edge_agent.local_api import LocalApi
from edge_agent.model_store import ModelStore
from edge_agent.mqtt_link import MqttLink
from edge_agent.observability import install_metrics
from edge_agent.outbox import Outbox
from edge_agent.rollout_agent import RolloutPart
from edge_agent.router import Router
from edge_agent.serving import ModelSet
from edge_agent.trust_updates import handle_trust_update
from farmiq import __version__, topics
from farmiq.bundle.trust import TrustRoot
from farmiq.director.gate import DirectorGate

log = logging.getLogger(__name__)

MAX_BUNDLES_WAITING = 2  # pushed bundles held in memory while one installs


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id = config.device_id
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.trust = TrustRoot.load(config.trust_root)
        self.models = ModelSet()
        self.store = ModelStore(config.state_dir)
        self.installer = Installer(
            self.store,
            self.models,
            self.trust,
            device_id=config.device_id,
            hardware_class=config.hardware_class,
            max_bundle_bytes=config.max_bundle_bytes,
            intra_op_threads=config.intra_op_threads,
        )
        # Feature cache (docs/features.md): a bundle whose feature schema it cannot serve
        # is refused before anything is staged.
        self.features = FeatureCache(config.state_dir / "features.db")
        self.installer.checks.append(self._feature_schema_check)
        self.router = Router.for_agent(self)  # hybrid router: edge, MCU, cloud (issue 3)
        self.started_at = time.time()
        self.install_lock = asyncio.Lock()
        self.last_install: InstallResult | None = None
        self.link = MqttLink(
            config.mqtt,
            client_id=f"farmiq-agent-{config.device_id}",
            subscriptions=[(topics.gw(config.device_id) + "/" + topics.DOWN_ALL, 1)],
            on_message=self.on_message,
            will=(topics.up(config.device_id, topics.STATUS), b"offline"),
            on_connect=self.on_connect,
        )
        # What the gateway owes the cloud goes through the durable outbox (docs/drift.md).
        self.outbox = Outbox(
            config.state_dir / "outbox.db",
            self.link.publish,
            disk_budget_bytes=int(config.drift.outbox_budget_mb * 1024 * 1024),
            ack_timeout_s=config.drift.outbox_ack_timeout_s,
            is_connected=self.link.connected.is_set,
        )
        self.drift = DriftReporter(
            config.device_id,
            self.outbox,
            farm_id=config.farm_id,
            window_s=config.drift.window_s,
            reservoir_size=config.drift.reservoir_size,
        )
        self.models.listeners.append(self._on_model_swap)
        self.router.observers.append(self.drift.observe)  # drift windows see every answer
        self.mcu: Any = None
        if config.mcu_ports:
            from edge_agent.mcu_service import McuService

            self.mcu = McuService(self)
        self._background: list[asyncio.Task[None]] = []
        self._bundles_waiting = 0
        self.api: LocalApi = build_api(self)
        self.rollout = RolloutPart(self)  # desired state, chunked transfers, shadow, health
        self.shadow = self.rollout.shadow  # request path: agent.shadow.observe(...)
        self.config_path: str | None = None  # set by run(); SIGHUP re-reads it
        self.lifecycle = Lifecycle(self)
        self.metrics = install_metrics(self)
        # Director envelopes (farmiq/director): signed, addressed, expiring, counted; the
        # counters persist in state_dir/director.json.
        self.director = DirectorGate.for_device(
            config.device_id, lambda: self.trust, config.state_dir, self._publish_up
        )
        self.metrics.add_source(self.director.metric_families)
        self._server: Any = None
        self._stop = asyncio.Event()
        self.api_port: int | None = None

    # -- state ---------------------------------------------------------------------------
    def reported_state(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "farm_id": self.config.farm_id,
            "hardware_class": self.config.hardware_class,
            "tags": self.config.tags,
            "entities": {"barn_id": [self.config.barn_id], "flock_id": self.config.flock_ids},
            "agent_version": __version__,
            "models": {
                m.name: {
                    "version": m.version,
                    "bundle_id": m.manifest.bundle_id,
                    "runtime": m.manifest.runtime,
                    "feature_schema": m.manifest.feature_schema.model_dump()
                    if m.manifest.feature_schema
                    else None,
                }
                for m in self.models.all()
            },
            "platform": {"machine": platform.machine(), "python": platform.python_version()},
            **self.rollout.reported_extra(),
            "ts": time.time(),
        }

    def ready(self) -> tuple[bool, str]:
        if not self.models.all():
            return False, "no model installed"
        if not all(m.warm for m in self.models.all()):
            return False, "models warming up"
        broker = self.lifecycle.broker_state()  # connected | offline (known) | connecting
        if broker == "connecting":
            return False, "connecting to the broker"
        return True, "serving" + ("" if broker == "connected" else " (broker offline)")

    async def publish_state(self) -> None:
        await self.link.publish(
            topics.up(self.device_id, topics.STATE),
            orjson.dumps(self.reported_state()),
            retain=True,
        )

    # -- MQTT ----------------------------------------------------------------------------
    async def on_connect(self) -> None:
        await self.link.publish(topics.up(self.device_id, topics.STATUS), b"online", retain=True)
        await self.publish_state()
        await self.rollout.on_connect()

    async def on_message(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_down(topic)
        if parsed is None or parsed[0] != self.device_id:
            return
        leaf = parsed[1]
        opened = await self.director.open(leaf, payload)  # signed leaves: verify first
        if opened is None:
            return
        payload = opened
        if leaf == topics.BUNDLE:
            if self._bundles_waiting >= MAX_BUNDLES_WAITING:
                # A flood of pushed bundles must not pile up in memory behind the install
                # lock: refuse, say so, and let the sender retry.
                log.warning("bundle refused: %d installs already waiting", self._bundles_waiting)
                await self._ack_install(InstallResult(False, "busy", "installs already waiting"))
                return
            self._bundles_waiting += 1
            try:
                await self.handle_bundle(payload)
            finally:
                self._bundles_waiting -= 1
        elif self.rollout.handles(leaf):  # down/desired, down/chunk (docs/rollout.md)
            await self.rollout.on_message(leaf, payload)
        elif leaf == topics.OUTBOX_ACK:  # the control plane stored these outbox items
            await self.outbox.ahandle_ack_message(payload)  # SQLite commit: off the loop
        elif leaf == topics.FEATURES:  # cloud-side features for our entities
            try:
                await asyncio.to_thread(self.features.apply_cloud_features, payload)
            except ValueError as exc:
                log.warning("cloud features refused: %s", exc)
        elif leaf == topics.ACTUATOR:
            if self.mcu is None:
                log.warning("actuator command but no MCU is configured")
            else:
                await self.mcu.handle_command(payload)
        elif leaf == topics.TRUST:  # root rotation (docs/security.md)
            await handle_trust_update(self, payload)
        else:
            log.debug("ignoring message on %s", topic)

    async def handle_bundle(self, bundle: bytes, ack: bool = True) -> InstallResult:
        async with self.install_lock:
            result = await asyncio.to_thread(self.installer.install, bundle)
        self.last_install = result
        if ack:  # rollouts acknowledge through the desired-state manager instead
            await self._ack_install(result)
        if result.ok:
            if result.name and result.code != "already-installed":
                self.router.on_model_swap(result.name)  # new state, cached answers dropped
            await self.publish_state()
        return result

    async def _publish_up(self, leaf: str, payload: bytes) -> None:
        await self.link.publish(topics.up(self.device_id, leaf), payload)

    async def _ack_install(self, result: InstallResult) -> None:
        await self.link.publish(
            topics.up(self.device_id, topics.INSTALL_ACK),
            orjson.dumps({**result.as_dict(), "device_id": self.device_id, "ts": time.time()}),
        )

    def _feature_schema_check(self, manifest: Any) -> str | None:
        ref = manifest.feature_schema
        if ref is None:
            return None
        ok, reason = self.features.can_serve(ref.name, ref.version)
        return None if ok else f"feature schema {ref.name}:{ref.version}: {reason}"

    def _on_model_swap(self, new: Any, old: Any) -> None:
        if old is not None and old.version != new.version:
            self.drift.unregister(old.name, old.version)
        self.drift.register(new)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        loaded = await asyncio.to_thread(self.installer.load_installed)
        if loaded:
            log.info("serving installed models: %s", ", ".join(loaded))
        await self._start_api()
        await self.link.start()
        self._background += [
            asyncio.create_task(self.outbox.run(), name="outbox"),
            asyncio.create_task(self.drift.run(), name="drift-windows"),
        ]
        if self.mcu is not None:
            await self.mcu.start()
        self.rollout.start()

    async def _start_api(self) -> None:
        import uvicorn

        cfg = uvicorn.Config(
            self.api,
            host=self.config.api.host,
            port=self.config.api.port,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            # Per-request work nobody reads on a gateway's local API: the proxy-headers
            # middleware layer and the Server header (each header written is checked by
            # two regexes). Date stays (RFC 9110). See docs/inference.md, benchmarks.
            proxy_headers=False,
            server_header=False,
        )
        server = uvicorn.Server(cfg)
        # The agent owns SIGTERM/SIGHUP (edge_agent/lifecycle.py): uvicorn must not capture them.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server = server
        self._server_task = asyncio.create_task(server.serve())
        while not server.started:
            if self._server_task.done():
                self._server_task.result()
                raise RuntimeError("local API failed to start")
            await asyncio.sleep(0.01)
        sock = server.servers[0].sockets[0]
        self.api_port = sock.getsockname()[1]
        log.info("local API on http://%s:%s", self.config.api.host, self.api_port)

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        self.lifecycle.begin_stop()
        if self._server is not None:
            self.lifecycle.prepare_http_drain(self._server)
            self._server.should_exit = True
            await self._server_task
        self.drift.flush()  # running drift windows into the outbox before it is flushed
        await self.lifecycle.after_http_drained()
        await self.router.close()
        for task in self._background:
            task.cancel()
        self.outbox.close()
        self.features.close()
        self.rollout.stop()
        await self.link.stop(final=(topics.up(self.device_id, topics.STATUS), b"offline"))

    async def run_forever(self) -> None:
        self.lifecycle.install_signal_handlers()  # SIGTERM/SIGINT stop, SIGHUP reloads
        await self.start()
        # Start-up objects (modules, models, pydantic schemas) never become garbage: move
        # them out of the collector's generations so a full collection stops scanning them.
        gc.collect()
        gc.freeze()
        port_file = os.environ.get("FARMIQ_AGENT_PORT_FILE")
        if port_file:
            with open(port_file, "w") as fh:
                fh.write(str(self.api_port))
        self.lifecycle.started()
        await self._stop.wait()
        log.info("stopping")
        await self.stop()
        self.lifecycle.finished()


def run(config: AgentConfig, config_path: str | None = None) -> None:
    async def main() -> None:
        agent = Agent(config)
        agent.config_path = config_path
        await agent.run_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
