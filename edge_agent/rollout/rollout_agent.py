"""The agent's part in fleet rollouts, kept out of agent.py: desired state, chunked
transfers, shadow mode and health reports. ``Agent`` creates one ``RolloutPart`` and
forwards the ``down/desired`` and ``down/chunk`` leaves to it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.models.serving import LoadedModel, health_check, load_runtime
from edge_agent.rollout.desired_state import DesiredStateManager
from edge_agent.rollout.health_report import InferenceStats, resources
from edge_agent.rollout.probation_probe import RecentInputs, non_finite, probe
from edge_agent.rollout.shadow import ShadowRunner
from edge_agent.rollout.transfer_receiver import ByteBudget, TransferReceiver
from farmiq import topics
from farmiq.bundle.format import Manifest
from farmiq.bundle.verifier import BundleRejected

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)

LEAVES = (topics.DESIRED, topics.CHUNK)


class RolloutPart:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.config.rollout
        state = agent.config.state_dir
        self.stats = InferenceStats()
        self.recent = (
            RecentInputs()
        )  # real inputs for probation (edge_agent/rollout/probation_probe.py)
        self.shadow = ShadowRunner(self._publish_shadow, report_every_s=cfg.shadow_report_s)
        self.budget = ByteBudget(
            cfg.byte_budget, cfg.budget_period_s, state / "transfer-budget.json"
        )
        self.receiver = TransferReceiver(
            self._publish_transfer,
            state_dir=state,
            window=cfg.chunk_window,
            request_timeout_s=cfg.chunk_timeout_s,
            budget=self.budget,
            max_bytes=agent.config.max_bundle_bytes,
        )
        self.desired = DesiredStateManager(self, agent.device_id, self.receiver, state)
        agent.installer.checks.append(self._not_blocked)
        self._tasks: list[asyncio.Task[None]] = []
        self._health_dirty = asyncio.Event()

    # -- wiring from Agent ---------------------------------------------------------------
    def handles(self, leaf: str) -> bool:
        return leaf in LEAVES

    async def on_message(self, leaf: str, payload: bytes) -> None:
        if leaf == topics.DESIRED:
            self.desired.on_desired(payload)
        elif leaf == topics.CHUNK:
            await self.receiver.on_chunk_async(payload)  # hash + fsync in a worker thread

    async def on_connect(self) -> None:
        self._health_dirty.set()

    def start(self) -> None:
        self.shadow.start()
        self._tasks.append(asyncio.ensure_future(self._health_loop()))
        if self.desired.doc.models:  # resume an interrupted transfer from disk after a reboot
            self.desired.kick()

    def stop(self) -> None:
        self.shadow.stop()
        for t in self._tasks:
            t.cancel()

    def reported_extra(self) -> dict[str, Any]:
        link = self.agent.link
        return {
            "resources": resources(self.agent.config.state_dir),
            "link": {
                "connected": link.connected.is_set(),
                "reconnects": link.reconnects,
                "bytes_received": self.receiver.bytes_received,
            },
            "transfer": self.receiver.progress(),
            "desired_rev": self.desired.doc.rev,
            "blocked": {k: sorted(v) for k, v in self.desired.blocked.items()},
            "shadow": {
                n: r["candidate_version"] for r in self.shadow.report() for n in [r["model"]]
            },
        }

    def observe(self, model: str, inputs: Any, result: dict[str, Any]) -> None:
        """Called by the request path after a model answered (never raises)."""
        try:
            outs = result.get("outputs")
            # a NaN answer is a failed answer: it counts against the version's error rate
            bad = isinstance(outs, dict) and non_finite(outs) is not None
            self.stats.record(model, result.get("version"), result.get("latency_ms"), bad)
            if isinstance(outs, dict) and not bad:
                self.recent.add(model, inputs)
                self.shadow.observe(model, inputs, outs)
        except Exception:  # the request already succeeded; never fail it here
            log.debug("observe failed", exc_info=True)

    def record_error(self, model: str) -> None:
        m = self.agent.models.get(model)
        self.stats.record(model, m.version if m else None, None, True)

    # -- DesiredHost ---------------------------------------------------------------------
    def installed(self) -> dict[str, tuple[int, str]]:
        return {m.name: (m.version, m.manifest.bundle_id) for m in self.agent.models.all()}

    def previous_version(self, name: str) -> int | None:
        prev = self.agent.store.previous(name)
        return prev.version if prev else None

    async def install(self, bundle: bytes) -> dict[str, Any]:
        res = await self.agent.handle_bundle(bundle, ack=False)
        self._health_dirty.set()
        return res.as_dict()

    async def revert(self, name: str) -> dict[str, Any]:
        async with self.agent.install_lock:
            try:
                res = await asyncio.to_thread(self.agent.installer.rollback, name)
            except (OSError, RuntimeError, ValueError) as exc:
                return {"ok": False, "code": "rollback-failed", "reason": str(exc), "name": name}
        if res.ok:
            self.agent.router.on_model_swap(name)
            await self.agent.publish_state()
        self._health_dirty.set()
        return res.as_dict()

    async def probation(self, name: str) -> str | None:
        """Confirm a just-switched model before it is committed: at once on real inputs
        (recent requests and the bundle's reference sample), then on live traffic for
        ``probation_s``. A reason returned here makes the gateway revert by itself."""
        m = self.agent.models.get(name)
        if m is None:
            return "model vanished after install"
        why = await asyncio.to_thread(probe, m, self.recent.get(name))
        if why:
            return why
        await asyncio.sleep(self.agent.config.rollout.probation_s)
        m = self.agent.models.get(name)
        if m is None:
            return "model vanished after install"
        try:
            await asyncio.to_thread(health_check, m)
        except Exception as exc:
            return f"health check after install failed: {exc}"
        errors, requests = self.stats.errors_since_load(name)
        if (
            requests >= 20
            and errors / requests > self.agent.config.rollout.probation_max_error_rate
        ):
            return f"{errors}/{requests} requests failed during probation"
        return None

    async def load_shadow(self, name: str, bundle: bytes, rollout: str | None) -> dict[str, Any]:
        inst = self.agent.installer
        try:
            cur = self.agent.store.current(name)
            vb = await asyncio.to_thread(inst.verify, bundle, cur.version if cur else None)
            model = await asyncio.to_thread(self._load_candidate, vb.manifest, vb.members)
        except BundleRejected as exc:
            return {"ok": False, "code": exc.code, "reason": exc.reason, "name": name}
        except Exception as exc:
            return {"ok": False, "code": "health-check", "reason": str(exc), "name": name}
        self.shadow.set_candidate(model, rollout)
        return {
            "ok": True,
            "code": "shadow-loaded",
            "reason": "candidate runs in shadow mode",
            "name": name,
            "version": model.version,
            "bundle_id": model.manifest.bundle_id,
        }

    def _load_candidate(self, manifest: Manifest, members: dict[str, bytes]) -> LoadedModel:
        d = self.agent.config.state_dir / "shadow" / manifest.name
        d.mkdir(parents=True, exist_ok=True)
        for member, blob in members.items():
            p = d / member
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
        runtime = load_runtime(
            manifest, d / manifest.model_file, self.agent.config.intra_op_threads
        )
        model = LoadedModel(manifest, runtime, d)
        health_check(model)
        return model

    def shadow_bundle(self, name: str) -> str | None:
        return self.shadow.candidate_bundle(name)

    async def clear_shadow(self, name: str) -> None:
        """Stop shadowing ``name`` (its final agreement report goes out first)."""
        await self.shadow.final_report(name)
        self.shadow.clear(name)

    async def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        await self.agent.link.publish(topics.up(self.agent.device_id, leaf), payload, retain=retain)

    # -- internals -----------------------------------------------------------------------
    def _not_blocked(self, manifest: Manifest) -> str | None:
        if self.desired.is_blocked(manifest.name, manifest.version):
            return f"{manifest.name} v{manifest.version} was rolled back on this fleet; refusing it"
        return None

    async def _publish_transfer(self, payload: bytes) -> None:
        await self.publish(topics.TRANSFER, payload)

    async def _publish_shadow(self, payload: bytes) -> None:
        await self.publish(topics.SHADOW, payload)

    def health(self) -> dict[str, Any]:
        return {
            "device_id": self.agent.device_id,
            "models": self.stats.snapshot(),
            "installed": {n: v for n, (v, _) in self.installed().items()},
            "resources": resources(self.agent.config.state_dir),
            "link": {"reconnects": self.agent.link.reconnects},
            "transfer": self.receiver.progress(),
            "ts": time.time(),
        }

    async def _health_loop(self) -> None:
        every = self.agent.config.rollout.health_interval_s
        while True:
            try:
                await asyncio.wait_for(self._health_dirty.wait(), every)
            except TimeoutError:
                pass
            self._health_dirty.clear()
            if self.agent.link.connected.is_set():
                try:
                    await self.publish(topics.HEALTH, orjson.dumps(self.health()))
                except ConnectionError:
                    pass
