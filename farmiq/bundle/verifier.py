"""Bundle verification: every check a gateway makes before installing anything.

Reads top to bottom in the order the checks run. Any failure raises ``BundleRejected``
with a short machine-readable ``code`` and a human reason; nothing is written to disk here.

1. container: a plain tar of regular files, no links, no absolute or ``..`` paths, no
   duplicates, bounded member count and total size (checked before reading data);
2. manifest: parses against the schema;
3. signatures: at least ``threshold`` distinct trusted, unrevoked keys signed the manifest;
4. freshness: neither the bundle nor the trust root is past its expiry (offline grace:
   the agent re-verifies *installed* bundles with ``now`` far in the past, so a farm that
   is offline for weeks keeps serving while it accepts no stale update);
5. targeting: addressed to this device and hardware class (when the manifest says so);
6. rollback: version not older than the installed one unless it is a signed rollback order
   naming exactly the installed version (an old order cannot be replayed later);
7. members: exactly the declared set, each with its declared size and sha256 (read with a
   size cap, so endless data stops at the declared size).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydantic import ValidationError

from farmiq.bundle.format import MANIFEST, SIGNATURES, Manifest
from farmiq.bundle.signature_process import SignatureProcessError
from farmiq.bundle.signing import valid_signers
from farmiq.bundle.trust import TrustRoot

MAX_MEMBERS = 32
MAX_MANIFEST_BYTES = 256 * 1024


class BundleRejected(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class VerifyPolicy:
    max_bundle_bytes: int = 512 * 1024 * 1024
    device_id: str | None = None
    hardware_class: str | None = None
    installed_version: int | None = None
    now: datetime | None = None


@dataclass
class VerifiedBundle:
    manifest: Manifest
    manifest_bytes: bytes
    members: dict[str, bytes] = field(repr=False)
    signed_by: list[str]


def _read_capped(tar: tarfile.TarFile, info: tarfile.TarInfo, cap: int) -> bytes:
    """Read at most ``cap`` bytes of a member. Never allocates more than the member really
    holds (a declared size of a terabyte must not become a terabyte-sized read buffer)."""
    if info.size > cap:
        raise BundleRejected("size", f"member {info.name!r} is larger than declared ({cap} bytes)")
    fh = tar.extractfile(info)
    if fh is None:
        raise BundleRejected("container", f"member {info.name!r} is not a regular file")
    data = fh.read(min(cap, info.size) + 1)
    if len(data) > cap:
        raise BundleRejected("size", f"member {info.name!r} is larger than declared ({cap} bytes)")
    return data


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def verify_bundle(
    data: bytes | str | Path, trust: TrustRoot, policy: VerifyPolicy | None = None
) -> VerifiedBundle:
    policy = policy or VerifyPolicy()
    raw = Path(data).read_bytes() if isinstance(data, str | Path) else data
    if len(raw) > policy.max_bundle_bytes:
        raise BundleRejected("size", f"bundle is {len(raw)} bytes, limit {policy.max_bundle_bytes}")

    # 1. container
    try:
        # Kept open for the whole verification: members are read lazily with size caps.
        tar = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")  # noqa: SIM115
        infos = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleRejected("container", f"not a bundle archive: {exc}") from None
    if len(infos) > MAX_MEMBERS:
        raise BundleRejected("container", f"{len(infos)} members, at most {MAX_MEMBERS}")
    by_name: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        name = info.name
        if name.startswith("/") or ".." in name.split("/") or "\\" in name:
            raise BundleRejected("path", f"member path {name!r} escapes the bundle")
        if not info.isreg():
            raise BundleRejected("path", f"member {name!r} is a link or special file")
        if name in by_name:
            raise BundleRejected("container", f"member {name!r} appears twice")
        by_name[name] = info
    if MANIFEST not in by_name or SIGNATURES not in by_name:
        raise BundleRejected("unsigned", "bundle has no manifest or no signatures")

    # 2. manifest
    manifest_bytes = _read_capped(tar, by_name[MANIFEST], MAX_MANIFEST_BYTES)
    try:
        manifest = Manifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise BundleRejected("manifest", f"manifest invalid: {exc.errors()[0]['msg']}") from None
    if manifest.canonical() != manifest_bytes:
        raise BundleRejected("manifest", "manifest is not in canonical form")

    # 3. signatures
    try:
        sigs = orjson.loads(_read_capped(tar, by_name[SIGNATURES], 64 * 1024))["signatures"]
        assert isinstance(sigs, list)
    except Exception:
        raise BundleRejected("unsigned", "signatures.json is unreadable") from None
    keys, threshold = trust.role_keys("bundle")
    try:
        good = valid_signers(keys, sigs, manifest_bytes)
    except SignatureProcessError as exc:  # the check process failed: refused, never passed
        raise BundleRejected("signature", str(exc)) from None
    if not sigs:
        raise BundleRejected("unsigned", "bundle carries no signature")
    if len(good) < threshold:
        known = any(isinstance(s, dict) and s.get("keyid") in keys for s in sigs)
        if not known:
            raise BundleRejected("untrusted-key", "no signature by a trusted, unrevoked key")
        raise BundleRejected(
            "signature", f"{len(good)} valid trusted signature(s), threshold is {threshold}"
        )

    # 4. freshness
    now = policy.now or datetime.now(UTC)
    if manifest.expires and _parse_time(manifest.expires) < now:
        raise BundleRejected("expired", f"bundle metadata expired at {manifest.expires}")
    if trust.is_expired(now):
        raise BundleRejected(
            "expired", f"trust root expired at {trust.expires}; no new bundle until it is rotated"
        )

    # 5. targeting
    tg = manifest.targeting
    if tg.devices and policy.device_id not in tg.devices:
        raise BundleRejected("not-for-device", f"bundle is addressed to {', '.join(tg.devices)}")
    if tg.hardware and policy.hardware_class not in tg.hardware:
        raise BundleRejected("not-for-hardware", f"bundle is for hardware {', '.join(tg.hardware)}")

    # 6. rollback
    installed = policy.installed_version
    if installed is not None and manifest.version < installed and manifest.rollback_of != installed:
        why = (
            f"version {manifest.version} is older than installed {installed}"
            if manifest.rollback_of is None
            else f"rollback order is from version {manifest.rollback_of}, installed is {installed}"
        )
        raise BundleRejected("rollback", why)

    # 7. members
    declared = set(manifest.members)
    present = set(by_name) - {MANIFEST, SIGNATURES}
    if present != declared:
        extra, missing = sorted(present - declared), sorted(declared - present)
        raise BundleRejected("members", f"undeclared members {extra}, missing members {missing}")
    if manifest.model_file not in declared:
        raise BundleRejected("members", f"model file {manifest.model_file!r} is not a member")
    declared_total = sum(meta.size for meta in manifest.members.values())
    if declared_total > policy.max_bundle_bytes:  # refused before any member is read
        raise BundleRejected(
            "size",
            f"members declare {declared_total} bytes, limit {policy.max_bundle_bytes}",
        )
    members: dict[str, bytes] = {}
    for name, meta in manifest.members.items():
        blob = _read_capped(tar, by_name[name], meta.size)
        if len(blob) != meta.size:
            raise BundleRejected(
                "size", f"member {name!r} is {len(blob)} bytes, declared {meta.size}"
            )
        if hashlib.sha256(blob).hexdigest() != meta.sha256:
            raise BundleRejected("hash", f"member {name!r} does not match its sha256")
        members[name] = blob
    return VerifiedBundle(manifest, manifest_bytes, members, sorted(good))
