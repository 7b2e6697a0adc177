"""Desired state on the gateway: converge on what ``down/desired`` (retained) asks for.

The control plane keeps one retained desired-state document per gateway, so a gateway
that was offline for a week gets the *latest* one the moment it reconnects and never sees
the versions in between. Rules, in order, per model:

1. versions listed in ``blocked`` (rolled back) are never installed; if one is running,
   the gateway reverts to its kept previous version by itself;
2. a desired version equal to the installed one needs nothing (acknowledged once);
3. a desired version equal to the kept previous one is a local revert (no download);
4. otherwise the bundle is fetched in chunks (``TransferReceiver``), verified and
   installed; it is committed only after the loaded model passes a health check, and a
   failed probation reverts to the previous version by itself;
5. ``mode = "shadow"`` loads the candidate beside the served model (edge_agent/rollout/shadow.py)
   instead of installing it.

Documents older than the last one applied (queued QoS 1 copies after a reconnect) are
ignored. The same class drives the fleet simulator, so simulated gateways speak exactly
this protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from edge_agent.rollout.transfer_receiver import TransferFailed, TransferReceiver
from farmiq import topics
from farmiq.rollout_wire import DesiredDoc, DesiredModel, WireError

log = logging.getLogger(__name__)


class DesiredHost(Protocol):
    """What the manager needs from the gateway (the agent, or a simulated gateway)."""

    def installed(self) -> dict[str, tuple[int, str]]: ...  # name -> (version, bundle_id)
    def previous_version(self, name: str) -> int | None: ...
    async def install(self, bundle: bytes) -> dict[str, Any]: ...  # InstallResult.as_dict()
    async def revert(self, name: str) -> dict[str, Any]: ...
    async def probation(self, name: str) -> str | None: ...  # reason to revert, or None
    async def load_shadow(
        self, name: str, bundle: bytes, rollout: str | None
    ) -> dict[str, Any]: ...
    def shadow_bundle(self, name: str) -> str | None: ...
    async def clear_shadow(self, name: str) -> None: ...
    async def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None: ...


class DesiredStateManager:
    def __init__(
        self,
        host: DesiredHost,
        device_id: str,
        receiver: TransferReceiver,
        state_dir: Path | None = None,
    ) -> None:
        self.host = host
        self.device_id = device_id
        self.receiver = receiver
        self.path = state_dir / "desired.json" if state_dir is not None else None
        self.doc = DesiredDoc()
        self.blocked: dict[str, set[int]] = {}
        self.failed: set[str] = set()  # bundle ids that failed here: not retried until changed
        self.acked: set[str] = set()
        # name -> bundle id installed but not yet through probation. Persisted, so an agent
        # stopped mid-probation (crash, power cut) finishes it after it comes back.
        self.probation: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._install_lock = asyncio.Lock()
        self.converged = asyncio.Event()
        self._load()

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            saved = orjson.loads(self.path.read_bytes())
            self.doc = DesiredDoc.model_validate(saved["doc"])
            self.blocked = {k: set(v) for k, v in saved.get("blocked", {}).items()}
            self.failed = set(saved.get("failed", []))
            self.acked = set(saved.get("acked", []))
            self.probation = dict(saved.get("probation", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring unreadable %s: %s", self.path, exc)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(
            orjson.dumps(
                {
                    "doc": self.doc.model_dump(mode="json"),
                    "blocked": {k: sorted(v) for k, v in self.blocked.items()},
                    "failed": sorted(self.failed),
                    "acked": sorted(self.acked)[-256:],
                    "probation": self.probation,
                }
            )
        )
        os.replace(tmp, self.path)

    # -- the installer's veto (also covers bundles pushed directly on down/bundle) -------
    def is_blocked(self, name: str, version: int) -> bool:
        return version in self.blocked.get(name, set())

    # -- inbound -------------------------------------------------------------------------
    def on_desired(self, payload: bytes) -> None:
        try:
            doc = DesiredDoc.parse(payload)
        except WireError as exc:
            log.warning("%s", exc)
            return
        if doc.rev < self.doc.rev:
            log.info("ignoring desired state rev %d (have rev %d)", doc.rev, self.doc.rev)
            return
        if doc.rev == self.doc.rev and doc.models == self.doc.models:
            # The control plane sent the same document again: it is waiting for an answer.
            # A transfer in progress goes on (restarting it would throw away its window);
            # a finished one answers again, in case the first answer was lost.
            if self._task is not None and not self._task.done():
                return
            self.acked.clear()
        self.doc = doc
        for name, d in doc.models.items():
            if d.blocked:
                self.blocked.setdefault(name, set()).update(d.blocked)
        self._save()
        self.kick()

    def resume(self) -> None:
        """After a restart: converge on the document kept on disk, unless the retained
        desired state already started that (cancelling it could cut a probation short)."""
        if self.doc.models and (self._task is None or self._task.done()):
            self.kick()

    def kick(self) -> None:
        """(Re)start convergence on the current document; a running one is cancelled
        (its chunks stay held) unless it is inside an install."""
        prev = self._task
        if prev is not None and not prev.done():
            prev.cancel()
        self.converged.clear()
        self._task = asyncio.ensure_future(self._converge(prev))

    async def _converge(self, prev: asyncio.Task[None] | None = None) -> None:
        try:
            if prev is not None and not prev.done():
                # the superseded run finishes its clean-up (its fetch's finally, a shielded
                # install) before this one touches the receiver, or it would clear our fetch
                await asyncio.wait({prev})
            for name, d in list(self.doc.models.items()):
                try:
                    await self._one(name, d)
                except TransferFailed as exc:
                    await self._ack(name, d, {"ok": False, "code": "transfer", "reason": str(exc)})
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let one model stop the daemon
                    log.exception("converging %s failed", name)
                    await self._ack(name, d, {"ok": False, "code": "error", "reason": str(exc)})
            self.receiver.discard()
            self.converged.set()
        except asyncio.CancelledError:
            pass

    async def _one(self, name: str, d: DesiredModel) -> None:
        if d.mode != "shadow" and self.host.shadow_bundle(name) is not None:
            # the shadow wave is over (promoted to install, or rolled back): stop shadowing
            await self.host.clear_shadow(name)
        blocked = self.blocked.get(name, set())
        cur = self.host.installed().get(name)
        if cur is not None and cur[0] in blocked:
            prev = self.host.previous_version(name)
            if (
                prev is not None
                and prev not in blocked
                and (d.version is None or d.version == prev)
            ):
                await self._revert(name, d)
                return
            if d.version is None:
                log.warning("%s v%d is blocked but no earlier version is kept", name, cur[0])
                return
        if d.version is None or d.bundle_id is None:
            return
        if d.version in blocked:
            log.warning("desired %s v%d was rolled back; not installing it", name, d.version)
            return
        if d.mode == "shadow":
            if self.host.shadow_bundle(name) != d.bundle_id and d.bundle_id not in self.failed:
                data = await self.receiver.fetch(d)
                res = await self._shielded(self.host.load_shadow(name, data, d.rollout))
                if not res.get("ok"):
                    self.failed.add(d.bundle_id)
                await self._ack(name, d, res, force=True)
            else:
                await self._ack(
                    name, d, {"ok": True, "code": "shadow-loaded", "reason": "candidate loaded"}
                )
            return
        pending = self.probation.get(name)
        if cur is not None and pending is not None:
            if cur[1] == pending:  # stopped mid-probation: finish it before anything else
                installed = {
                    "ok": True,
                    "code": "installed",
                    "version": cur[0],
                    "bundle_id": pending,
                }
                res = await self._shielded(self._finish_probation(name, installed))
                if not res.get("ok"):
                    self.failed.add(pending)
                await self._ack(name, d, res, force=True)
                return
            self.probation.pop(name)  # another version is current now: nothing to finish
            self._save()
        if cur is not None and cur[0] == d.version:
            await self._ack(
                name,
                d,
                {
                    "ok": True,
                    "code": "already-installed",
                    "reason": "version installed",
                    "version": d.version,
                    "bundle_id": cur[1],
                },
            )
            return
        if d.bundle_id in self.failed:
            return
        if cur is not None and d.version < cur[0] and self.host.previous_version(name) == d.version:
            await self._revert(name, d)
            return
        data = await self.receiver.fetch(d)
        res = await self._shielded(self._install(name, data))
        if not res.get("ok"):
            self.failed.add(d.bundle_id)
        self.receiver.discard(d.bundle_id)
        await self._ack(name, d, res, force=True)

    async def _install(self, name: str, data: bytes) -> dict[str, Any]:
        async with self._install_lock:
            res = await self.host.install(data)
            if res.get("ok") and res.get("code") == "installed":
                res = await self._probation(name, res)
            return res

    async def _finish_probation(self, name: str, res: dict[str, Any]) -> dict[str, Any]:
        async with self._install_lock:
            return await self._probation(name, res)

    async def _probation(self, name: str, res: dict[str, Any]) -> dict[str, Any]:
        """Watch a freshly installed version (install lock held); revert by ourselves if it
        fails. The marker is on disk for the whole watch."""
        self.probation[name] = str(res.get("bundle_id"))
        self._save()
        try:
            why = await self.host.probation(name)
            if why:
                log.error("%s failed its post-install health check (%s); reverting", name, why)
                await self.host.revert(name)
                res = {**res, "ok": False, "code": "self-rollback", "reason": why}
        finally:
            self.probation.pop(name, None)
            self._save()
        return res

    async def _revert(self, name: str, d: DesiredModel) -> None:
        async with self._install_lock:
            res = await self.host.revert(name)
        await self._ack(name, d, res, force=True)

    @staticmethod
    async def _shielded(coro: Any) -> dict[str, Any]:
        # An install in progress finishes even when a newer desired state arrives.
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task
            raise

    async def _ack(
        self, name: str, d: DesiredModel, res: dict[str, Any], force: bool = False
    ) -> None:
        key = f"{name}:{d.bundle_id}:{d.rollout}:{d.mode}"
        if key in self.acked and not force:
            return
        self.acked.add(key)
        self._save()
        body = {
            "name": name,
            "version": d.version,
            **{k: v for k, v in res.items() if v is not None},
            "desired_bundle_id": d.bundle_id,
            "rollout": d.rollout,
            "mode": d.mode,
            "device_id": self.device_id,
            "ts": time.time(),
        }
        await self.host.publish(topics.INSTALL_ACK, orjson.dumps(body))
