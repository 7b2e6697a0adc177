"""Installing a bundle: verify, stage, load, health-check, switch. Or refuse and say why.

The running model keeps serving through every step; it is replaced only after the new one
has loaded and answered its warm-up. Any failure leaves the disk and the served model as
they were, and comes back as an ``InstallResult`` with a code and a reason.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.models.model_store import InstalledModel, ModelStore
from edge_agent.models.serving import LoadedModel, ModelSet, load_checked, missing_runtime
from edge_agent.models.trust_holder import TrustHolder
from farmiq import __version__
from farmiq.bundle.format import Manifest
from farmiq.bundle.trust import TrustRoot
from farmiq.bundle.verifier import BundleRejected, VerifiedBundle, VerifyPolicy, verify_bundle

log = logging.getLogger(__name__)

# A check the feature cache (or anything else) can add: returns a reason to refuse, or None.
ManifestCheck = Callable[[Manifest], str | None]


@dataclass
class InstallResult:
    ok: bool
    code: str
    reason: str
    name: str | None = None
    version: int | None = None
    bundle_id: str | None = None
    previous_version: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Installer:
    def __init__(
        self,
        store: ModelStore,
        models: ModelSet,
        trust: TrustHolder | TrustRoot,
        *,
        device_id: str,
        hardware_class: str,
        max_bundle_bytes: int,
        intra_op_threads: int = 1,
        checks: list[ManifestCheck] | None = None,
    ) -> None:
        self.store = store
        self.models = models
        # The one trust-root holder (edge_agent/models/trust_holder.py); a bare root is
        # wrapped so tests and tools can hand one in.
        self.trust_holder = trust if isinstance(trust, TrustHolder) else TrustHolder(trust, Path())
        self.device_id = device_id
        self.hardware_class = hardware_class
        self.max_bundle_bytes = max_bundle_bytes
        self.intra_op_threads = intra_op_threads
        self.checks: list[ManifestCheck] = [missing_runtime, *(checks or [])]

    @property
    def trust(self) -> TrustRoot:
        return self.trust_holder.current

    @trust.setter
    def trust(self, root: TrustRoot) -> None:
        self.trust_holder.current = root

    def verify(self, bundle: bytes, installed_version: int | None) -> VerifiedBundle:
        return verify_bundle(
            bundle,
            self.trust,
            VerifyPolicy(
                max_bundle_bytes=self.max_bundle_bytes,
                device_id=self.device_id,
                hardware_class=self.hardware_class,
                installed_version=installed_version,
            ),
        )

    def load(self, installed: InstalledModel) -> LoadedModel:
        return load_checked(installed.manifest, installed.path, self.intra_op_threads)

    def install(self, bundle: bytes) -> InstallResult:
        """Blocking (CPU and disk); the agent runs it in a worker thread.

        Never raises: whatever goes wrong becomes a refusal with a code (docs/security.md):
        a verifier code, ``agent-too-old``, ``incompatible``, ``health-check``, ``io`` (the
        disk failed while staging) or ``internal`` (a bug; logged with its traceback)."""
        try:
            return self._install(bundle)
        except MemoryError:
            log.error("bundle install ran out of memory")
            return InstallResult(False, "size", "bundle needs more memory than this gateway has")
        except OSError as exc:
            log.exception("bundle install failed on disk")
            return InstallResult(False, "io", f"disk error while installing: {exc}")
        except Exception as exc:
            log.exception("bundle install failed unexpectedly")
            return InstallResult(False, "internal", f"{type(exc).__name__}: {exc}")

    def _install(self, bundle: bytes) -> InstallResult:
        # 1. verify (signatures, hashes, sizes, paths, targeting, expiry, rollback)
        try:
            peek = self._peek_name(bundle)
            cur = self.store.current(peek) if peek else None
            vb = self.verify(bundle, cur.version if cur else None)
        except BundleRejected as exc:
            log.warning("bundle rejected: %s", exc, extra={"code": exc.code})
            return InstallResult(False, exc.code, exc.reason)
        m = vb.manifest
        ids: dict[str, Any] = {"name": m.name, "version": m.version, "bundle_id": m.bundle_id}
        if cur is not None and cur.manifest.bundle_id == m.bundle_id:
            return InstallResult(True, "already-installed", "bundle already installed", **ids)
        if _version_tuple(m.min_agent_version) > _version_tuple(__version__):
            too_old = f"bundle needs agent {m.min_agent_version} or newer; this is {__version__}"
            return InstallResult(False, "agent-too-old", too_old, **ids)
        for check in self.checks:
            why = check(m)
            if why:
                return InstallResult(False, "incompatible", why, **ids)
        # 2. stage on disk (fsynced), 3. load and health-check, 4. switch atomically
        staged = self.store.stage(bundle, vb.manifest_bytes, vb.members)
        try:
            candidate = load_checked(m, staged, self.intra_op_threads)
        except Exception as exc:
            self.store.discard(staged)
            log.warning("bundle %s v%s failed its health check: %s", m.name, m.version, exc)
            return InstallResult(
                False, "health-check", f"model failed to load or warm up: {exc}", **ids
            )
        installed = self.store.commit(staged, m)
        candidate.path = installed.path
        old = self.models.swap(candidate)
        log.info("installed %s v%s", m.name, m.version, extra={"bundle_id": m.bundle_id})
        return InstallResult(
            True,
            "installed",
            "installed and serving",
            previous_version=old.version if old else None,
            **ids,
        )

    @staticmethod
    def _peek_name(bundle: bytes) -> str | None:
        """The model name, read without trusting it, to find the installed version."""
        try:
            from farmiq.bundle.builder import read_container

            manifest, _, _ = read_container(bundle)
            name = Manifest.model_validate_json(manifest).name
            return name
        except Exception:
            return None

    def load_installed(self) -> list[str]:
        """Load every current model from disk (agent start-up; no control plane needed).
        Each stored bundle is verified again, so a tampered disk is noticed."""
        loaded = []
        for name in self.store.names():
            inst = self.store.current(name)
            if inst is None:
                continue
            try:
                self.models.swap(self._load_verified(inst))
                loaded.append(name)
                continue
            except (BundleRejected, OSError, RuntimeError, ValueError) as exc:
                log.error("cannot serve installed model %s: %s", name, exc)
            # The current version is damaged on disk: serve the kept previous one (verified
            # the same way) rather than nothing, and make it current so disk and API agree.
            prev = self.store.previous(name)
            if prev is None:
                continue
            try:
                self.models.swap(self._load_verified(prev))
                self.store.revert(name)
                loaded.append(name)
                log.error("serving %s v%s, the previous version", name, prev.version)
            except (BundleRejected, OSError, RuntimeError, ValueError) as exc:
                log.error("cannot serve previous version of %s either: %s", name, exc)
        return loaded

    def _load_verified(self, inst: InstalledModel) -> LoadedModel:
        bundle = (inst.path / "bundle.fqb").read_bytes()
        vb = verify_bundle(
            bundle,
            self.trust,
            VerifyPolicy(
                max_bundle_bytes=self.max_bundle_bytes,
                device_id=self.device_id,
                hardware_class=self.hardware_class,
                now=_no_expiry(),
            ),
        )
        for member, blob in vb.members.items():
            if (inst.path / member).read_bytes() != blob:
                raise BundleRejected("hash", f"installed member {member} changed on disk")
        return self.load(inst)

    def rollback(self, name: str) -> InstallResult:
        prev = self.store.previous(name)
        if prev is None:
            return InstallResult(
                False, "no-previous", f"no previous version of {name} kept", name=name
            )
        model = self.load(prev)
        self.store.revert(name)
        old = self.models.swap(model)
        return InstallResult(
            True,
            "rolled-back",
            "previous version restored",
            name=name,
            version=prev.version,
            bundle_id=prev.manifest.bundle_id,
            previous_version=old.version if old else None,
        )


def _version_tuple(version: str) -> tuple[int, ...]:
    """'1.2.3' -> (1, 2, 3); pre-release suffixes are ignored ('1.3.0rc1' -> (1, 3, 0))."""
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits or 0))
    return tuple(parts)


def _no_expiry() -> datetime:
    """Offline grace: an installed model keeps running after its metadata expires; expiry
    only stops accepting *new* bundles."""
    return datetime.min.replace(tzinfo=UTC)
