"""Installed bundles on disk, with an atomic switch and the previous version kept.

Layout under ``<state_dir>/models/<name>/``::

    v0003-1a2b3c4d/        one directory per installed bundle (version + bundle id)
        bundle.fqb         the verified bundle, byte for byte (re-verified on start)
        manifest.json
        model/model.onnx   ...and the other members
    current -> v0003-1a2b3c4d
    previous -> v0002-...

A new version is written under ``<state_dir>/staging``, fsynced, renamed into place, and
made current by replacing the ``current`` symlink with ``os.replace`` (atomic on POSIX),
then the directory is fsynced. A crash at any point leaves either the old or the new
version current, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from farmiq.bundle.format import Manifest


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    manifest: Manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def member(self, name: str) -> Path:
        return self.path / name


class ModelStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "models"
        self.staging = Path(state_dir) / "staging"
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)
        # Anything left in staging is an install a crash interrupted: discard it.
        for leftover in self.staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    def stage(self, bundle: bytes, manifest_bytes: bytes, members: dict[str, bytes]) -> Path:
        """Write a verified bundle to a fresh staging directory, fsynced."""
        d = self.staging / uuid.uuid4().hex
        _write_synced(d / "bundle.fqb", bundle)
        _write_synced(d / "manifest.json", manifest_bytes)
        for name, blob in members.items():
            _write_synced(d / name, blob)
        for sub in {d, *[(d / n).parent for n in members]}:
            _fsync_dir(sub)
        return d

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def commit(self, staged: Path, manifest: Manifest) -> InstalledModel:
        """Move a staged bundle into place and make it current (previous kept)."""
        model_dir = self.root / manifest.name
        model_dir.mkdir(parents=True, exist_ok=True)
        target = model_dir / f"v{manifest.version:04d}-{manifest.bundle_id[:8]}"
        if target.exists():
            shutil.rmtree(target)
        os.rename(staged, target)
        cur = self.current(manifest.name)
        if cur is not None and cur.path != target:
            self._point(model_dir, "previous", cur.path.name)
        self._point(model_dir, "current", target.name)
        self._prune(model_dir)
        return InstalledModel(manifest.name, target, manifest)

    def _point(self, model_dir: Path, link: str, dest: str) -> None:
        tmp = model_dir / f".{link}.{uuid.uuid4().hex[:8]}"
        os.symlink(dest, tmp)
        os.replace(tmp, model_dir / link)
        _fsync_dir(model_dir)

    def _prune(self, model_dir: Path) -> None:
        keep = set()
        for link in ("current", "previous"):
            p = model_dir / link
            if p.is_symlink():
                keep.add(os.readlink(p))
        for child in model_dir.iterdir():
            if child.is_dir() and not child.is_symlink() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def _read(self, name: str, link: str) -> InstalledModel | None:
        p = self.root / name / link
        if not p.is_symlink():
            return None
        target = p.resolve()
        try:
            manifest = Manifest.model_validate_json((target / "manifest.json").read_bytes())
        except (OSError, ValueError):
            return None
        return InstalledModel(name, target, manifest)

    def current(self, name: str) -> InstalledModel | None:
        return self._read(name, "current")

    def previous(self, name: str) -> InstalledModel | None:
        return self._read(name, "previous")

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "current").is_symlink())

    def revert(self, name: str) -> InstalledModel | None:
        """Make ``previous`` current again (a local rollback). Returns the new current."""
        model_dir = self.root / name
        prev, cur = self.previous(name), self.current(name)
        if prev is None:
            return None
        self._point(model_dir, "current", prev.path.name)
        if cur is not None:
            self._point(model_dir, "previous", cur.path.name)
        return prev
