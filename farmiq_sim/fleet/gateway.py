"""One simulated gateway: a real MQTT session, the agent's own desired-state manager and
transfer receiver, and the real bundle verifier. Only the model runtime is faked (a
simulated gateway "serves" by counting), so a thousand of them fit in one process.

Failure knobs, each chosen by a stable hash of the device id so a run is reproducible:
``fails`` (installs fail their health check), ``slow_bps`` (link bandwidth, chunks are
delayed accordingly) and offline periods (driven by the fleet).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from edge_agent.rollout.desired_state import DesiredStateManager
from edge_agent.rollout.transfer_receiver import ByteBudget, TransferReceiver
from farmiq import __version__, topics
from farmiq.bundle.trust import TrustRoot
from farmiq.bundle.verifier import BundleRejected, VerifyPolicy, verify_bundle
from farmiq.director.verifier import DirectorRefused, DirectorVerifier

log = logging.getLogger(__name__)


class SimGateway:
    def __init__(
        self,
        device_id: str,
        *,
        host: str,
        port: int,
        trust: TrustRoot,
        model: str,
        version: int | None,
        farm_id: str = "sim-farm",
        tags: list[str] | None = None,
        hardware_class: str = "sim",
        fails: bool = False,
        error_rate: float = 0.0,
        slow_bps: float | None = None,
        byte_budget: ByteBudget | None = None,
        window: int = 4,
        chunk_timeout_s: float = 3.0,
        health_every_s: float = 2.0,
    ) -> None:
        self.device_id = device_id
        self.host, self.port = host, port
        self.trust = trust
        self.farm_id, self.tags, self.hardware_class = farm_id, tags or [], hardware_class
        self.fails, self.error_rate, self.slow_bps = fails, error_rate, slow_bps
        self.health_every_s = health_every_s
        self.models: dict[str, tuple[int, str]] = {model: (version, "initial")} if version else {}
        self.previous: dict[str, tuple[int, str]] = {}
        self.shadow: dict[str, str] = {}
        self.installed_at: float | None = None
        self.online = False
        self.loop = asyncio.get_running_loop()
        self.receiver = TransferReceiver(
            self._publish_transfer,
            window=window,
            request_timeout_s=chunk_timeout_s,
            budget=byte_budget,
        )
        self._link_free_at = 0.0  # a slow link carries one message at a time
        self.chunk_arrivals: deque[tuple[float, int]] = deque(maxlen=4096)  # (time, bytes)
        self.desired = DesiredStateManager(self, device_id, self.receiver)
        # the agent's own director check (counters in memory: a simulated gateway has no disk)
        self.director = DirectorVerifier.from_trust(device_id, trust)
        self._misc: asyncio.TimerHandle | None = None
        self._want_online = True
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"farmiq-sim-{device_id}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        c.max_inflight_messages_set(50)
        c.max_queued_messages_set(0)
        c.will_set(topics.up(device_id, topics.STATUS), b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        # paho without its own thread: the event loop watches the socket (one loop, N gateways)
        c.on_socket_open = lambda cl, ud, sock: self.loop.add_reader(sock, cl.loop_read)  # type: ignore[assignment,arg-type]
        c.on_socket_close = lambda cl, ud, sock: self.loop.remove_reader(sock)  # type: ignore[assignment,arg-type]
        c.on_socket_register_write = lambda cl, ud, sock: self.loop.add_writer(sock, cl.loop_write)  # type: ignore[arg-type]
        c.on_socket_unregister_write = lambda cl, ud, sock: self.loop.remove_writer(sock)  # type: ignore[assignment,arg-type]
        self.client = c

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> None:
        self._want_online = True
        try:
            self.client.connect(self.host, self.port, keepalive=60)
        except OSError as exc:
            log.debug("%s: connect failed (%s); retrying", self.device_id, exc)
            self.loop.call_later(1.0 + random.random(), self.connect)
            return
        self._tick()

    def _tick(self) -> None:
        self.client.loop_misc()
        self._misc = self.loop.call_later(1.0, self._tick)

    def go_offline(self) -> None:
        self._want_online = False
        if self._misc:
            self._misc.cancel()
        self.client.disconnect()
        self.online = False

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        if rc.is_failure:
            return
        self.online = True
        client.subscribe(topics.gw(self.device_id) + "/" + topics.DOWN_ALL, qos=1)
        client.publish(topics.up(self.device_id, topics.STATUS), b"online", qos=1, retain=True)
        self._publish_state()
        self._publish_health()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self.online = False
        if self._want_online:
            if self._misc:
                self._misc.cancel()
            self.loop.call_later(1.0 + random.random(), self.connect)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = topics.parse_down(msg.topic)
        if parsed is None:
            return
        leaf, payload = parsed[1], bytes(msg.payload)
        if leaf == topics.DESIRED:
            try:
                opened = self.director.open(leaf, payload)
            except DirectorRefused as exc:
                log.warning("%s: desired state refused: %s", self.device_id, exc)
                return
            self.desired.on_desired(opened.body)
        elif leaf == topics.CHUNK:
            if self.slow_bps:
                # serialised: a window of chunks takes window x size / bps, not size / bps
                start = max(self.loop.time(), self._link_free_at)
                self._link_free_at = start + len(payload) / self.slow_bps
                self.loop.call_at(self._link_free_at, self._deliver, payload)
            else:
                self._deliver(payload)

    def _deliver(self, payload: bytes) -> None:
        self.chunk_arrivals.append((time.time(), len(payload)))
        self.receiver.on_chunk(payload)

    # -- reports -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "farm_id": self.farm_id,
            "tags": self.tags,
            "hardware_class": self.hardware_class,
            "agent_version": f"{__version__}-sim",
            "models": {n: {"version": v, "bundle_id": b} for n, (v, b) in self.models.items()},
            "link": {"simulated": True, "slow_bps": self.slow_bps},
            "ts": time.time(),
        }

    def _publish_state(self) -> None:
        self.client.publish(
            topics.up(self.device_id, topics.STATE), orjson.dumps(self.state()), qos=1, retain=True
        )

    def _publish_health(self) -> None:
        n = 100
        models = {
            name: {
                "version": v,
                "requests": n,
                "errors": int(n * self.error_rate),
                "error_rate": self.error_rate,
                "p99_ms": 1.0,
            }
            for name, (v, _) in self.models.items()
        }
        self.client.publish(
            topics.up(self.device_id, topics.HEALTH),
            orjson.dumps({"device_id": self.device_id, "models": models, "ts": time.time()}),
            qos=1,
        )

    async def _publish_transfer(self, payload: bytes) -> None:
        self.client.publish(topics.up(self.device_id, topics.TRANSFER), payload, qos=1)

    # -- DesiredHost ---------------------------------------------------------------------
    def installed(self) -> dict[str, tuple[int, str]]:
        return dict(self.models)

    def previous_version(self, name: str) -> int | None:
        p = self.previous.get(name)
        return p[0] if p else None

    async def install(self, bundle: bytes) -> dict[str, Any]:
        def verify() -> Any:
            from farmiq.bundle.builder import read_container
            from farmiq.bundle.format import Manifest

            name = Manifest.model_validate_json(read_container(bundle)[0]).name
            cur = self.models.get(name)
            return verify_bundle(
                bundle,
                self.trust,
                VerifyPolicy(
                    device_id=self.device_id,
                    hardware_class=self.hardware_class,
                    installed_version=cur[0] if cur else None,
                ),
            )

        try:
            vb = await asyncio.to_thread(verify)
        except BundleRejected as exc:
            return {"ok": False, "code": exc.code, "reason": exc.reason}
        except Exception as exc:
            return {"ok": False, "code": "container", "reason": str(exc)}
        m = vb.manifest
        ids = {"name": m.name, "version": m.version, "bundle_id": m.bundle_id}
        if self.desired.is_blocked(m.name, m.version):
            return {"ok": False, "code": "incompatible", "reason": "version was rolled back", **ids}
        if self.fails:
            return {
                "ok": False,
                "code": "health-check",
                "reason": "simulated health-check failure",
                **ids,
            }
        if m.name in self.models:
            self.previous[m.name] = self.models[m.name]
        self.models[m.name] = (m.version, m.bundle_id)
        self.installed_at = time.time()
        self._publish_state()
        self._publish_health()
        return {"ok": True, "code": "installed", "reason": "installed (simulated)", **ids}

    async def revert(self, name: str) -> dict[str, Any]:
        prev = self.previous.pop(name, None)
        if prev is None:
            return {"ok": False, "code": "no-previous", "reason": "nothing kept", "name": name}
        self.previous[name] = self.models[name]
        self.models[name] = prev
        self._publish_state()
        return {
            "ok": True,
            "code": "rolled-back",
            "reason": "previous restored",
            "name": name,
            "version": prev[0],
            "bundle_id": prev[1],
        }

    async def probation(self, name: str) -> str | None:
        return None

    async def load_shadow(self, name: str, bundle: bytes, rollout: str | None) -> dict[str, Any]:
        try:
            vb = await asyncio.to_thread(
                verify_bundle, bundle, self.trust, VerifyPolicy(device_id=self.device_id)
            )
        except BundleRejected as exc:
            return {"ok": False, "code": exc.code, "reason": exc.reason}
        self.shadow[name] = vb.manifest.bundle_id
        agree = 80 if self.fails else 100
        self.client.publish(
            topics.up(self.device_id, topics.SHADOW),
            orjson.dumps(
                {
                    "model": name,
                    "candidate_version": vb.manifest.version,
                    "rollout": rollout,
                    "rows": 100,
                    "agree": agree,
                    "agreement": agree / 100,
                    "ts": time.time(),
                }
            ),
            qos=1,
        )
        return {
            "ok": True,
            "code": "shadow-loaded",
            "reason": "candidate loaded (simulated)",
            "name": name,
            "version": vb.manifest.version,
            "bundle_id": vb.manifest.bundle_id,
        }

    def shadow_bundle(self, name: str) -> str | None:
        return self.shadow.get(name)

    async def clear_shadow(self, name: str) -> None:
        self.shadow.pop(name, None)

    async def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topics.up(self.device_id, leaf), payload, qos=1, retain=retain)
