"""The one install / rollback / trust-rotation service, used by the local API
(``POST /api/v1/models/{name}/rollback``), the MQTT dispatch (``down/bundle``,
``down/trust``) and the rollout part (desired state, probation revert, shadow verify).

It owns the install lock: installs, rollbacks, trust rotations and trust reloads are
serialised, so no bundle is verified against a half-applied root and no two swaps of one
model interleave. The blocking work (verify, stage, load, health-check) runs in a worker
thread (``Installer``); the swaps it made are then announced once, on the event loop,
through ``ModelEvents`` and the reported state is published.

A new check on the install path is a ``ManifestCheck`` (manifest -> reason to refuse, or
None) given to ``add_check``; the composition root (edge_agent/agent.py) adds the feature
cache's and the rollout's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge_agent.models.events import Cause, ModelEvents, ModelSwap
from edge_agent.models.installer import Installer, InstallResult, ManifestCheck
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import LoadedModel, ModelSet
from edge_agent.models.trust_holder import TrustHolder
from farmiq.bundle.trust import TrustError
from farmiq.bundle.verifier import VerifiedBundle

log = logging.getLogger(__name__)

StateChanged = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class InstallService:
    def __init__(
        self,
        installer: Installer,
        models: ModelSet,
        store: ModelStore,
        trust: TrustHolder,
        events: ModelEvents,
        state_changed: StateChanged = _nothing,
    ) -> None:
        self._installer = installer
        self._models = models
        self._store = store
        self.trust = trust
        self.events = events
        self.state_changed = state_changed
        self.lock = asyncio.Lock()
        self.last_install: InstallResult | None = None

    # -- configuration -------------------------------------------------------------------
    def add_check(self, check: ManifestCheck) -> None:
        self._installer.checks.append(check)

    def set_policy(self, *, hardware_class: str, max_bundle_bytes: int) -> None:
        self._installer.hardware_class = hardware_class
        self._installer.max_bundle_bytes = max_bundle_bytes

    # -- the swaps -----------------------------------------------------------------------
    async def _swapping(self, cause: Cause, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in a worker thread under the lock; announce what it swapped."""
        async with self.lock:
            before: dict[str, LoadedModel] = {m.name: m for m in self._models.all()}
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                for m in self._models.all():
                    old = before.get(m.name)
                    if old is not m:
                        self.events.emit(ModelSwap(m.name, m, old, cause))

    async def load_installed(self) -> list[str]:
        """Start-up: serve every installed model from disk (verified again)."""
        loaded: list[str] = await self._swapping("start", self._installer.load_installed)
        return loaded

    async def install(self, bundle: bytes) -> InstallResult:
        result: InstallResult = await self._swapping("install", self._installer.install, bundle)
        self.last_install = result
        if result.ok:
            await self.state_changed()
        return result

    async def rollback(self, name: str) -> InstallResult:
        """Serve the kept previous version of ``name``. Never raises: a previous version
        that fails to load leaves the current one serving (``rollback-failed``)."""
        try:
            result: InstallResult = await self._swapping("rollback", self._installer.rollback, name)
        except Exception as exc:  # the kept version failed to load: keep serving this one
            log.warning("rollback of %s failed, still serving: %s", name, exc)
            return InstallResult(False, "rollback-failed", str(exc), name=name)
        if result.ok:
            await self.state_changed()
        return result

    async def verify(self, bundle: bytes, name: str) -> VerifiedBundle:
        """Verify a bundle for ``name`` without installing it (shadow candidates)."""
        cur = self._store.current(name)
        return await asyncio.to_thread(self._installer.verify, bundle, cur.version if cur else None)

    # -- trust ---------------------------------------------------------------------------
    async def rotate_trust(self, payload: bytes) -> dict[str, Any]:
        """``down/trust``: new root metadata, accepted only when the current root's
        threshold signed it; written atomically before it is used."""
        async with self.lock:
            try:
                # parsing and signature checks are CPU work: off the event loop
                rotated = await asyncio.to_thread(self.trust.rotate, payload)
                if rotated is None:
                    answer = {"ok": True, "code": "current", "reason": "root already installed"}
                else:
                    answer = {"ok": True, "code": "rotated", "reason": "new root installed"}
                    log.warning("trust root rotated to version %s", rotated.version)
            except TrustError as exc:
                log.warning("root update refused: %s", exc)
                answer = {"ok": False, "code": "trust", "reason": str(exc)}
            except OSError as exc:  # could not persist: keep the old root in memory too
                log.error("could not save the rotated trust root: %s", exc)
                answer = {"ok": False, "code": "io", "reason": f"cannot save trust root: {exc}"}
        answer["version"] = self.trust.current.version
        return answer

    async def reload_trust(self, path: Path) -> str | None:
        """SIGHUP: re-read the root file. The reason it is unusable, or None."""
        async with self.lock:
            try:
                await asyncio.to_thread(self.trust.reload, path)
            except Exception as exc:
                return str(exc)
        return None
