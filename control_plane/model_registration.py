"""Registering a gateway model: metadata check, the gate, then one MLflow run and version.

Everything that can refuse (metadata, intake, the gate, the drift reference) runs before
anything is written, so a refused registration leaves no run, model or version behind.
The version's ``farmiq.meta`` tag carries what a bundle build needs: runtime, tensor
specs, labels, feature names and schema, serving defaults and lineage.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.model_gate import GateError, check_model
from control_plane.model_intake import GatewayModel, IntakeError, is_tflite, validate_meta
from control_plane.model_lineage import REFERENCE_ARTIFACT, SourceLineage
from control_plane.registry import META_TAG, RegistryError
from farmiq.bundle.format import Lineage, Serving, TensorSpec

log = logging.getLogger(__name__)

GATE_ROWS_MAX_CHARS = 2000  # rows of the input example kept for the bundle-build gate


def prepare_meta(gm: GatewayModel, meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = validate_meta(meta)
    runtime = meta.get("runtime") or gm.runtime
    if (runtime == "onnxruntime") != (gm.runtime == "onnxruntime"):
        raise IntakeError(f"runtime {runtime!r} cannot run a {gm.extension} model")
    meta["runtime"] = runtime
    if (
        not meta.get("labels")
        and gm.labels
        and meta.get("task", "classification") == "classification"
    ):
        meta["labels"] = gm.labels
    meta["inputs"] = [s.model_dump(mode="json") for s in gm.inputs]
    meta["outputs"] = [s.model_dump(mode="json") for s in gm.outputs]
    meta["flavor"] = gm.flavor
    rows = _example_rows(gm)
    if rows is not None:
        meta["gate_rows"] = rows
    if gm.notes:
        meta["intake_notes"] = gm.notes
    return meta


def _example_rows(gm: GatewayModel) -> dict[str, Any] | None:
    if not isinstance(gm.example, dict):
        return None
    rows = {k: np.asarray(v)[:8].tolist() for k, v in gm.example.items()}
    return rows if len(json.dumps(rows)) <= GATE_ROWS_MAX_CHARS else None


def gate(
    gm: GatewayModel, meta: dict[str, Any], reference: dict[str, Any] | None
) -> dict[str, Any]:
    if meta.get("skip_gate"):
        log.warning(
            "registration with skip_gate: the model was NOT run in the gateway runtime; "
            "only the gateways' own health check and probation stand between it and the fleet"
        )
        return {"skipped": True}
    sample = ((reference or {}).get("sample") or {}).get("rows")
    report = check_model(
        gm.model_bytes,
        runtime=meta["runtime"],
        inputs=gm.inputs,
        outputs=gm.outputs,
        example=gm.example,
        reference_sample=sample,
        task=meta.get("task", "classification"),
        labels=meta.get("labels"),
    )
    return report.as_dict()


def register_gateway_model(
    registry: Any,
    name: str,
    gm: GatewayModel,
    *,
    meta: dict[str, Any] | None,
    description: str = "",
    reference: dict[str, Any] | None = None,
    lineage: SourceLineage | None = None,
    extra_lineage: dict[str, Any] | None = None,
) -> int:
    """Check, then log ``gm`` in a registration run and register it. Returns the version.
    Raises IntakeError / GateError (both ValueError) before anything is written."""
    mlflow, client = registry._mlflow, registry.client
    full = prepare_meta(gm, meta)
    if reference is None and lineage is not None:
        reference = lineage.reference
    if reference is not None:
        from farmiq.drift_reference import validate_reference

        try:
            validate_reference(reference)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntakeError(f"invalid drift reference: {exc}") from None
    full["gate"] = gate(gm, full, reference)
    lin: dict[str, Any] = lineage.manifest_lineage(gm.flavor) if lineage else {"flavor": gm.flavor}
    lin.update(extra_lineage or {})
    full["lineage"] = {k: v for k, v in lin.items() if v is not None}
    if lineage is not None and lineage.notes:
        full["lineage_notes"] = lineage.notes
    full["monitored"] = reference is not None

    existed = _exists(client, name)
    with mlflow.start_run(experiment_id=registry.experiment_id, run_name=f"register-{name}") as run:
        tags = {"farmiq.kind": "registration", "farmiq.model": name, "farmiq.flavor": gm.flavor}
        if lineage is not None and lineage.run_id:
            tags["farmiq.source_run_id"] = lineage.run_id
        if lineage is not None and lineage.source_uri:
            tags["farmiq.source_uri"] = lineage.source_uri[:500]
        mlflow.set_tags(tags)
        if reference is not None:
            mlflow.log_dict(reference, REFERENCE_ARTIFACT)
        if gm.signature:
            mlflow.log_dict(gm.signature, "farmiq/signature.json")
        try:
            version = _log_and_register(registry, name, gm, run)
        except Exception:
            if not existed:  # leave no empty model behind
                try:
                    client.delete_registered_model(name)
                except Exception:
                    pass
            raise
    client.set_model_version_tag(name, str(version), META_TAG, json.dumps(full))
    if lineage is not None and lineage.holdout is not None and full.get("task") != "regression":
        X, y = lineage.holdout
        calibrate_version(
            client, name, version, gm.model_bytes, gm.runtime, X, y, full.get("labels")
        )
    if description:
        client.update_model_version(name, str(version), description=description)
    return version


def calibrate_version(
    client: Any, name: str, version: int, model_bytes: bytes, runtime: str, X: Any, y: Any,
    labels: Any = None,
) -> None:  # fmt: skip
    """The label-free estimate's calibration (farmiq/cbpe.py) on labelled holdout rows
    (a run's validation data at registration, the learning loop's holdout), in the gateway
    runtime, kept as the version's ``farmiq.calibration`` tag. The targets are class
    indices, or label names when the model names its labels."""
    import numpy as np

    from control_plane.learning.champion import probabilities
    from control_plane.registry import CALIBRATION_TAG
    from farmiq.cbpe import fit_calibration, top_confidence

    try:
        probs = probabilities(model_bytes, runtime, X)
        if probs is None:
            return
        names = [str(v) for v in labels] if labels else None
        if names is not None and all(str(v) in names for v in y):
            idx = np.asarray([names.index(str(v)) for v in y])
        else:
            idx = np.asarray(y, dtype=np.int64)
        cal = fit_calibration(top_confidence(probs), probs.argmax(axis=1) == idx)
    except (ValueError, TypeError, RuntimeError) as exc:  # too few rows, odd targets
        log.info("no calibration for %s v%d: %s", name, version, exc)
        return
    client.set_model_version_tag(name, str(version), CALIBRATION_TAG, json.dumps(cal.to_dict()))


def _exists(client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def _log_and_register(registry: Any, name: str, gm: GatewayModel, run: Any) -> int:
    mlflow, client = registry._mlflow, registry.client
    if gm.runtime == "onnxruntime":
        import onnx
        from mlflow.onnx import log_model

        info = log_model(
            onnx.load_from_string(gm.model_bytes),
            name="model",
            pip_requirements=["onnxruntime"],
            registered_model_name=name,
        )
        return int(info.registered_model_version)
    # MLflow has no TFLite flavor: the file is a plain artifact and the version points at it.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(gm.model_bytes)
        mlflow.log_artifact(str(path), "model")
    if not _exists(client, name):
        client.create_registered_model(name)
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return int(mv.version)


@dataclass
class BundlePlan:
    runtime: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    serving: dict[str, Any]
    lineage: Lineage | None
    gate: dict[str, Any]


def bundle_plan(
    model_bytes: bytes,
    meta: dict[str, Any],
    serving: dict[str, Any] | None,
    reference: dict[str, Any] | None,
) -> BundlePlan:
    """What a bundle of a registered version declares, checked by the gate on the bytes
    that go into it. Raises RegistryError(422) naming the problem."""
    from pydantic import ValidationError

    from farmiq.bundle.builder import io_specs

    runtime = meta.get("runtime") or ("litert" if is_tflite(model_bytes) else "onnxruntime")
    try:
        srv = Serving.model_validate(serving or meta.get("serving") or {})
    except ValidationError as exc:
        errs = "; ".join(
            f"serving.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise RegistryError(422, f"invalid serving: {errs}") from None
    try:
        if meta.get("inputs") and meta.get("outputs"):
            inputs = [TensorSpec.model_validate(x) for x in meta["inputs"]]
            outputs = [TensorSpec.model_validate(x) for x in meta["outputs"]]
        else:  # a version registered before specs were recorded
            inputs, outputs = io_specs(model_bytes, runtime)
        sample = ((reference or {}).get("sample") or {}).get("rows")
        if meta.get("skip_gate"):  # registered with the explicit, warned flag
            log.warning("bundle build without the gate: the version was registered with skip_gate")
            report = None
        else:
            report = check_model(
                model_bytes,
                runtime=runtime,
                inputs=inputs,
                outputs=outputs,
                example=meta.get("gate_rows"),
                reference_sample=sample,
                task=meta.get("task", "classification"),
                labels=meta.get("labels"),
            )
    except GateError as exc:
        raise RegistryError(422, f"a gateway could not serve this version: {exc}") from None
    except (ValueError, RuntimeError) as exc:  # unreadable model, bad stored specs
        raise RegistryError(
            422, f"a gateway could not load this version: {str(exc)[:300]}"
        ) from None
    lin = meta.get("lineage")
    return BundlePlan(
        runtime=runtime,
        inputs=inputs,
        outputs=outputs,
        serving=srv.model_dump(mode="json"),
        lineage=Lineage.model_validate(lin) if lin else None,
        gate=report.as_dict() if report is not None else {"skipped": True},
    )


__all__ = [
    "GateError",
    "IntakeError",
    "bundle_plan",
    "gate",
    "prepare_meta",
    "register_gateway_model",
]
