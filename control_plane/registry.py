"""The model registry, on MLflow: register ONNX models, promote with aliases, archive.

Aliases are MLflow's current API (stages are deprecated since 2.9). "production" is the
alias gateways are rolled out from. Archiving is a tag, never a delete: it removes the
model's aliases (remembered in a tag) and a restore puts them back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PRODUCTION = "production"
ARCHIVED_TAG = "farmiq.archived"
ARCHIVED_ALIASES_TAG = "farmiq.archived_aliases"
META_TAG = "farmiq.meta"  # JSON: task, labels, feature names, feature schema
CALIBRATION_TAG = "farmiq.calibration"  # JSON: farmiq.cbpe.Calibration of the version


def _calibration(tag: str | None) -> dict[str, Any] | None:
    """A version's calibration tag, or None when absent or unreadable (no estimate)."""
    if not tag:
        return None
    from farmiq.cbpe import Calibration

    try:
        return Calibration.from_dict(json.loads(tag)).to_dict()
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring an unreadable %s tag", CALIBRATION_TAG)
        return None


EXPERIMENT = "farmiq-registry"
REFERENCE_ARTIFACT = "farmiq/reference.json"


ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# MLflow reserves these alias names ("latest", "v<number>") and refuses them.
_RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$")
RESERVED_MODEL_NAMES = frozenset({PRODUCTION})  # GET /api/v1/models/production lists models


def check_alias(alias: str) -> str:
    if not ALIAS_RE.fullmatch(alias) or _RESERVED_ALIAS_RE.fullmatch(alias):
        raise RegistryError(
            422,
            f"invalid alias {alias[:80]!r}: lowercase letters, digits, '_' and '-', starting "
            "with a letter, at most 63 characters, and not 'latest' or 'v<number>'",
        )
    return alias


class RegistryError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ModelVersionInfo:
    name: str
    version: int
    source: str
    run_id: str | None
    aliases: list[str]
    meta: dict[str, Any]
    created: int
    calibration: dict[str, Any] | None = None  # farmiq/cbpe.py, fitted at registration

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class ModelRegistry:
    def __init__(self, tracking_uri: str, artifact_root: Path) -> None:
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.remote = tracking_uri.startswith(("http://", "https://"))
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            self.experiment_id = self._create_experiment(artifact_root)
        else:
            self.experiment_id = exp.experiment_id

    def _create_experiment(self, artifact_root: Path) -> str:
        """Through a tracking server the server picks the artifact store (``--serve-artifacts``:
        ``mlflow-artifacts:`` URIs, proxied, so no replica needs a shared disk); embedded, a
        local folder. Two replicas starting at once may race to create it: the loser reads."""
        from mlflow.exceptions import MlflowException

        location = None
        if not self.remote:
            artifact_root.mkdir(parents=True, exist_ok=True)
            location = artifact_root.resolve().as_uri()
        try:
            return str(self.client.create_experiment(EXPERIMENT, artifact_location=location))
        except MlflowException:
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return str(exp.experiment_id)

    # -- helpers ---------------------------------------------------------------------------
    def _get_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_registered_model(name)
        except MlflowException:
            raise RegistryError(404, f"model {name!r} is not registered") from None

    def _version(self, name: str, version: int) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(404, f"model {name!r} has no version {version}") from None
        return ModelVersionInfo(
            name=name,
            version=int(mv.version),
            source=mv.source or "",
            run_id=mv.run_id,
            aliases=list(mv.aliases or []),
            meta=json.loads((mv.tags or {}).get(META_TAG, "{}")),
            created=int(mv.creation_timestamp or 0),
            calibration=_calibration((mv.tags or {}).get(CALIBRATION_TAG)),
        )

    @staticmethod
    def _archived(rm: Any) -> bool:
        return (rm.tags or {}).get(ARCHIVED_TAG) == "true"

    # -- API -------------------------------------------------------------------------------
    def register_onnx(
        self,
        name: str,
        model_bytes: bytes,
        *,
        meta: dict[str, Any] | None = None,
        description: str = "",
        reference: dict[str, Any] | None = None,
    ) -> ModelVersionInfo:
        """Take in an uploaded model file (ONNX, or TFLite for LiteRT), pass it through the
        gateway gate, and register it as a new version of ``name`` (model_registration)."""
        from control_plane.model_intake import from_bytes
        from control_plane.model_registration import register_gateway_model

        try:
            gm = from_bytes(model_bytes)
            version = register_gateway_model(
                self, name, gm, meta=meta, description=description, reference=reference
            )
        except ValueError as exc:  # IntakeError, GateError: the message names the problem
            raise RegistryError(422, str(exc)) from None
        return self._version(name, version)

    def register_uri(
        self, name: str, source_uri: str, *, meta: dict[str, Any] | None = None
    ) -> ModelVersionInfo:
        """Register an MLflow model (``runs:/``, ``models:/``, ``mlflow-artifacts:`` or a path
        in the registry's store): onnx and sklearn flavors, or a logged .tflite. The model is
        converted for gateways, gated, and logged with its lineage before any version exists."""
        from control_plane.model_intake import check_source_uri, from_uri
        from control_plane.model_lineage import lineage_of_source
        from control_plane.model_registration import register_gateway_model

        roots = [self.client.get_experiment(self.experiment_id).artifact_location]
        try:
            check_source_uri(source_uri, roots)
            gm = from_uri(source_uri, self.tracking_uri)
            lineage = lineage_of_source(
                self.client,
                source_uri,
                feature_names=(meta or {}).get("feature_names"),
                own_roots=roots,
                tracking_uri=self.tracking_uri,
            )
            version = register_gateway_model(self, name, gm, meta=meta, lineage=lineage)
        except ValueError as exc:  # IntakeError, GateError: the message names the problem
            raise RegistryError(422, str(exc)) from None
        return self._version(name, version)

    def get(self, name: str) -> dict[str, Any]:
        rm = self._get_model(name)
        versions = [
            self._version(name, int(v.version)).as_dict()
            for v in self.client.search_model_versions(f"name='{name}'")
        ]
        versions.sort(key=lambda v: v["version"])
        return {
            "name": name,
            "description": rm.description,
            "archived": self._archived(rm),
            "aliases": dict(rm.aliases or {}),
            "versions": versions,
            "latest_version": versions[-1]["version"] if versions else None,
        }

    def list_models(self, include_archived: bool = False) -> list[dict[str, Any]]:
        out = []
        for rm in self.client.search_registered_models():
            if self._archived(rm) and not include_archived:
                continue
            out.append(
                {"name": rm.name, "archived": self._archived(rm), "aliases": dict(rm.aliases or {})}
            )
        return out

    def promote(self, name: str, version: int, alias: str = PRODUCTION) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        check_alias(alias)
        rm = self._get_model(name)
        if self._archived(rm):
            raise RegistryError(409, f"model {name!r} is archived; restore it first")
        self._version(name, version)  # 404 if missing
        try:
            self.client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise RegistryError(422, f"cannot set alias {alias!r}: {exc.message}") from None
        return self._version(name, version)

    def production(self) -> list[ModelVersionInfo]:
        out = []
        for rm in self.client.search_registered_models():
            if self._archived(rm):
                continue
            v = (rm.aliases or {}).get(PRODUCTION)
            if v is not None:
                out.append(self._version(rm.name, int(v)))
        return out

    def resolve(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersionInfo:
        rm = self._get_model(name)
        if self._archived(rm):
            raise RegistryError(409, f"model {name!r} is archived")
        if version is None:
            alias = alias or PRODUCTION
            v = (rm.aliases or {}).get(alias)
            if v is None:
                raise RegistryError(
                    409, f"model {name!r} has no {alias!r} alias; promote a version first"
                )
            version = int(v)
        return self._version(name, version)

    def archive(self, name: str) -> dict[str, Any]:
        rm = self._get_model(name)
        if self._archived(rm):
            return self.get(name)
        aliases = dict(rm.aliases or {})
        self.client.set_registered_model_tag(name, ARCHIVED_ALIASES_TAG, json.dumps(aliases))
        for alias in aliases:
            self.client.delete_registered_model_alias(name, alias)
        self.client.set_registered_model_tag(name, ARCHIVED_TAG, "true")
        return self.get(name)

    def restore(self, name: str) -> dict[str, Any]:
        rm = self._get_model(name)
        if not self._archived(rm):
            # Nothing to undo. Re-applying the aliases remembered by an earlier archive
            # would silently move "production" back to an old version.
            return self.get(name)
        aliases = json.loads((rm.tags or {}).get(ARCHIVED_ALIASES_TAG, "{}"))
        for alias, version in aliases.items():
            self.client.set_registered_model_alias(name, alias, str(version))
        self.client.set_registered_model_tag(name, ARCHIVED_TAG, "false")
        self.client.delete_registered_model_tag(name, ARCHIVED_ALIASES_TAG)
        return self.get(name)

    def reference(self, name: str, version: int) -> dict[str, Any] | None:
        """The drift reference logged with a version, or None."""
        mv = self._version(name, version)
        if not mv.run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self._mlflow.artifacts.download_artifacts(
                    run_id=mv.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp
                )
            except Exception:
                return None
            return json.loads(Path(path).read_text())  # type: ignore[no-any-return]

    def model_bytes(self, name: str, version: int) -> bytes:
        """The model file (.onnx, or .tflite for LiteRT) of a registered version."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(
                self._mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{version}", dst_path=tmp
                )
            )
            candidates = sorted(path.rglob("*.onnx")) or sorted(path.rglob("*.tflite"))
            if not candidates:
                raise RegistryError(422, f"models:/{name}/{version} holds no model file")
            return candidates[0].read_bytes()
