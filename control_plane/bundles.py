"""Bundle building on the control plane: registry version -> signed bundle on disk."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from control_plane.db import Database
from control_plane.model_registration import bundle_plan
from control_plane.registry import ModelRegistry
from control_plane.tables import BundleRecord
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer


class BundleService:
    def __init__(
        self,
        db: Database,
        registry: ModelRegistry,
        signers: list[Signer],
        bundle_dir: Path,
        expiry_days: int = 90,
    ) -> None:
        self.db = db
        self.registry = registry
        self.signers = signers
        self.dir = bundle_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.expiry = timedelta(days=expiry_days)

    def build(
        self,
        name: str,
        version: int,
        *,
        targeting: dict[str, Any] | None = None,
        serving: dict[str, Any] | None = None,
        rollback_of: int | None = None,
        session: Session | None = None,
    ) -> tuple[BundleRecord, bytes]:
        """Build, sign and store a bundle. ``session``: a caller already inside a write
        transaction (the rollout scheduler's tick) passes its own; a second connection would
        wait on the first one's write lock under SQLite."""
        mv = self.registry.resolve(name, version)
        model = self.registry.model_bytes(name, version)
        meta = mv.meta
        schema = meta.get("feature_schema")
        reference = self.registry.reference(name, version)
        # The gate again, on the bytes that go into the bundle (control_plane.model_gate).
        plan = bundle_plan(model, meta, serving, reference)
        data = build_bundle(
            model,
            name=name,
            version=version,
            signers=self.signers,
            task=meta.get("task", "classification"),
            labels=meta.get("labels"),
            feature_names=meta.get("feature_names"),
            feature_schema=(schema["name"], schema["version"]) if schema else None,
            reference=reference,
            serving=plan.serving,
            runtime=plan.runtime,
            inputs=plan.inputs,
            outputs=plan.outputs,
            lineage=plan.lineage,
            targeting=targeting,
            expires_in=self.expiry,
            rollback_of=rollback_of,
            registry_uri=f"models:/{name}/{version}",
            calibration=mv.calibration,
        )
        from farmiq.bundle.builder import read_container
        from farmiq.bundle.format import Manifest

        manifest = Manifest.model_validate_json(read_container(data)[0])
        path = self.dir / f"{name}-v{version}-{manifest.bundle_id[:8]}.fqb"
        path.write_bytes(data)
        rec = BundleRecord(
            bundle_id=manifest.bundle_id,
            name=name,
            version=version,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            path=str(path),
            registry_uri=manifest.registry_uri,
            targeting=manifest.targeting.model_dump(),
        )
        if session is not None:
            session.add(rec)
        else:
            with self.db.session() as s:
                s.add(rec)
        return rec, data

    def load(self, bundle_id: str) -> tuple[BundleRecord, bytes] | None:
        with self.db.session() as s:
            rec = s.get(BundleRecord, bundle_id)
        if rec is None:
            return None
        return rec, Path(rec.path).read_bytes()
