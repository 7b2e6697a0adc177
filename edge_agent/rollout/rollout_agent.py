"""The agent's part in fleet rollouts: desired state, chunked transfers, probation, shadow
mode and health reports.

It gets narrow ports, never the agent: the model set and store (what is installed), the
``InstallService`` (install, revert, verify: the same one the API and MQTT use), a link
state and an ``up/<leaf>`` publisher. It watches answers as an ``InferenceObserver`` of
the router (``answered`` a batch at a time, ``failed``), so rollout health sees every
caller of the router.
The composition root registers its ``down/desired`` and ``down/chunk`` handlers."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edge_agent.config import RolloutAgentSettings
from edge_agent.inference.observers import AnsweredBatch
from edge_agent.inference.result import InferenceResult
from edge_agent.models.install_service import InstallService
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import LoadedModel, ModelSet, health_check, load_checked
from edge_agent.rollout.desired_state import DesiredStateManager
from edge_agent.rollout.health_report import InferenceStats, resources
from edge_agent.rollout.probation_probe import RecentInputs, non_finite, probe
from edge_agent.rollout.shadow import ShadowRunner
from edge_agent.rollout.transfer_receiver import ByteBudget, TransferReceiver
from edge_agent.uplink.port import LinkState, PublishUp
from farmiq import topics
from farmiq.bundle.format import Manifest
from farmiq.bundle.verifier import BundleRejected

log = logging.getLogger(__name__)


class RolloutPart:
    def __init__(
        self,
        settings: RolloutAgentSettings,
        *,
        device_id: str,
        state_dir: Path,
        max_bundle_bytes: int,
        intra_op_threads: int,
        models: ModelSet,
        store: ModelStore,
        installs: InstallService,
        link: LinkState,
        publish_up: PublishUp,
    ) -> None:
        cfg = self.settings = settings
        state = self.state_dir = state_dir
        self.device_id = device_id
        self.intra_op_threads = intra_op_threads
        self.models = models
        self.store = store
        self.installs = installs
        self.link = link
        self._publish_up = publish_up
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
            max_bytes=max_bundle_bytes,
        )
        self.desired = DesiredStateManager(self, device_id, self.receiver, state)
        installs.add_check(self._not_blocked)  # a version rolled back on this fleet
        self._tasks: list[asyncio.Task[None]] = []
        self._health_dirty = asyncio.Event()

    # -- MQTT leaves (registered by the composition root) ---------------------------------
    async def on_desired(self, payload: bytes) -> None:
        self.desired.on_desired(payload)

    async def on_chunk(self, payload: bytes) -> None:
        await self.receiver.on_chunk_async(payload)  # hash + fsync in a worker thread

    async def on_connect(self) -> None:
        self._health_dirty.set()

    def start(self) -> None:
        self.shadow.start()
        self._tasks.append(asyncio.ensure_future(self._health_loop()))
        self.desired.resume()  # an interrupted transfer or probation, from disk

    def stop(self) -> None:
        self.shadow.stop()
        for t in self._tasks:
            t.cancel()

    def reported_extra(self) -> dict[str, Any]:
        link = self.link
        return {
            "resources": resources(self.state_dir),
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

    # -- InferenceObserver (edge_agent/inference/observers.py) ---------------------------
    def answered(self, batch: AnsweredBatch) -> None:
        """Answers of the router, whoever asked, a batch at a time (never raises)."""
        try:
            name, answers = batch.model.name, batch.answers
            stacked = batch.stacked()
            # The common case in one check: every answer computed and every output finite.
            if (
                stacked is not None
                and not any(r.cached for _, r in answers)
                and non_finite(stacked[1]) is None
            ):
                self.stats.record_ok(name, batch.model.version, [r.latency_ms for _, r in answers])
                self.recent.extend(name, [a for a, _ in answers])
                if self.shadow.watching(name):
                    for arrays, result in answers:
                        self.shadow.observe(name, arrays, result.outputs)
                return
            for arrays, result in answers:
                self._answered(arrays, result)
        except Exception:  # the requests already succeeded; never fail them here
            log.debug("observe failed", exc_info=True)

    def _answered(self, inputs: dict[str, np.ndarray], result: InferenceResult) -> None:
        outs = result.outputs
        # a NaN answer is a failed answer: it counts against the version's error rate
        bad = non_finite(outs) is not None
        self.stats.record(result.model, result.version, result.latency_ms, bad)
        if not bad:
            self.recent.add(result.model, inputs)
            self.shadow.observe(result.model, inputs, outs)

    def failed(self, name: str) -> None:
        """A request the router could not serve (no target, every target failed)."""
        m = self.models.get(name)
        self.stats.record(name, m.version if m else None, None, True)

    # -- DesiredHost ---------------------------------------------------------------------
    def installed(self) -> dict[str, tuple[int, str]]:
        return {m.name: (m.version, m.manifest.bundle_id) for m in self.models.all()}

    def previous_version(self, name: str) -> int | None:
        prev = self.store.previous(name)
        return prev.version if prev else None

    async def install(self, bundle: bytes) -> dict[str, Any]:
        # acknowledged through the desired-state manager (up/install), not here
        res = await self.installs.install(bundle)
        self._health_dirty.set()
        return res.as_dict()

    async def revert(self, name: str) -> dict[str, Any]:
        res = await self.installs.rollback(name)
        self._health_dirty.set()
        return res.as_dict()

    async def probation(self, name: str) -> str | None:
        """Confirm a just-switched model before it is committed: at once on real inputs
        (recent requests and the bundle's reference sample), then on live traffic for
        ``probation_s``. A reason returned here makes the gateway revert by itself."""
        m = self.models.get(name)
        if m is None:
            return "model vanished after install"
        why = await asyncio.to_thread(probe, m, self.recent.get(name))
        if why:
            return why
        await asyncio.sleep(self.settings.probation_s)
        m = self.models.get(name)
        if m is None:
            return "model vanished after install"
        try:
            await asyncio.to_thread(health_check, m)
        except Exception as exc:
            return f"health check after install failed: {exc}"
        errors, requests = self.stats.errors_since_load(name)
        if requests >= 20 and errors / requests > self.settings.probation_max_error_rate:
            return f"{errors}/{requests} requests failed during probation"
        return None

    async def load_shadow(self, name: str, bundle: bytes, rollout: str | None) -> dict[str, Any]:
        try:
            vb = await self.installs.verify(bundle, name)
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
        d = self.state_dir / "shadow" / manifest.name
        d.mkdir(parents=True, exist_ok=True)
        for member, blob in members.items():
            p = d / member
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
        return load_checked(manifest, d, self.intra_op_threads)

    def shadow_bundle(self, name: str) -> str | None:
        return self.shadow.candidate_bundle(name)

    async def clear_shadow(self, name: str) -> None:
        """Stop shadowing ``name`` (its final agreement report goes out first)."""
        await self.shadow.final_report(name)
        self.shadow.clear(name)

    async def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        await self._publish_up(leaf, payload, retain=retain)

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
            "device_id": self.device_id,
            "models": self.stats.snapshot(),
            "installed": {n: v for n, (v, _) in self.installed().items()},
            "resources": resources(self.state_dir),
            "link": {"reconnects": self.link.reconnects},
            "transfer": self.receiver.progress(),
            "ts": time.time(),
        }

    async def _health_loop(self) -> None:
        every = self.settings.health_interval_s
        while True:
            try:
                await asyncio.wait_for(self._health_dirty.wait(), every)
            except TimeoutError:
                pass
            self._health_dirty.clear()
            if self.link.connected.is_set():
                try:
                    await self.publish(topics.HEALTH, orjson.dumps(self.health()))
                except ConnectionError:
                    pass
