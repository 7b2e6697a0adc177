"""Lineage of a registered model: the MLflow run that made it, its training dataset, and
the drift reference computed from that dataset.

A version registered from a run is monitored like one FarmIQ trained: its drift reference
is the run's own ``farmiq/reference.json`` when the run logged one, else it is computed
from the training dataset the run logged with ``mlflow.log_input`` (context ``training``)
when that dataset's source is in the registry's stores and is a CSV or Parquet file.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from control_plane.model_intake import IntakeError, check_source_uri

REFERENCE_ARTIFACT = "farmiq/reference.json"
_RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-f]{32})(/|$)")


@dataclass
class SourceLineage:
    run_id: str | None = None
    source_uri: str | None = None
    dataset: dict[str, Any] | None = None  # {name, digest, source}
    reference: dict[str, Any] | None = None
    reference_from: str | None = None  # "run artifact", "training dataset", None
    parent_version: int | None = None  # from a retraining run's farmiq.parent_version tag
    data_window: list[float] | None = None  # from its farmiq.data_window tag
    # Labelled rows the run logged as its validation data (mlflow.log_input, context
    # "validation", "evaluation", "holdout" or "test"): (features, targets). The
    # label-free estimate's calibration is fitted on them at registration.
    holdout: tuple[Any, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def manifest_lineage(self, flavor: str | None) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source_uri": self.source_uri,
            "flavor": flavor,
            "dataset": self.dataset,
            "parent_version": self.parent_version,
            "data_window": self.data_window,
        }


def source_run_id(client: Any, uri: str) -> str | None:
    """The run behind ``runs:/<id>/...`` or ``models:/<logged model id>`` (MLflow 3)."""
    m = _RUN_URI.match(uri)
    if m:
        return m.group("run")
    if uri.startswith("models:/m-"):
        try:
            return str(client.get_logged_model(uri[len("models:/") :].split("/")[0]).source_run_id)
        except Exception:  # an unknown id: the download already said what was wrong
            return None
    if uri.startswith("models:/"):
        parts = uri[len("models:/") :].split("/")
        if len(parts) >= 2 and parts[1].isdigit():
            try:
                return client.get_model_version(parts[0], parts[1]).run_id  # type: ignore[no-any-return]
            except Exception:
                return None
    return None


def training_dataset(run: Any) -> Any:
    """The dataset input a run tagged as its training data (or its only dataset)."""
    inputs = list(getattr(run.inputs, "dataset_inputs", None) or [])
    for di in inputs:
        tags = {t.key: t.value for t in di.tags or []}
        if tags.get("mlflow.data.context") == "training":
            return di
    return inputs[0] if len(inputs) == 1 else None


HOLDOUT_CONTEXTS = ("validation", "evaluation", "eval", "holdout", "test")
TARGET_NAMES = ("label", "target", "y", "truth")


def holdout_dataset(run: Any) -> Any:
    """The dataset input a run tagged as labelled validation data, or None."""
    for di in list(getattr(run.inputs, "dataset_inputs", None) or []):
        tags = {t.key: t.value for t in di.tags or []}
        if tags.get("mlflow.data.context") in HOLDOUT_CONTEXTS:
            return di
    return None


def _dataset_uri(dataset: Any) -> str | None:
    try:
        src = json.loads(dataset.source or "{}")
    except (TypeError, ValueError):
        return None
    uri = src.get("uri") or src.get("url") or src.get("path")
    return str(uri) if uri else None


def _load_dataset(
    di: Any, own_roots: list[str], tracking_uri: str | None, what: str
) -> tuple[Any, str | None]:
    """A logged dataset (CSV/Parquet in the registry's stores) as a DataFrame, or why not."""
    import mlflow

    uri = _dataset_uri(di.dataset)
    if not uri:
        return None, f"the {what} has no loadable source"
    try:
        check_source_uri(uri, own_roots)
    except IntakeError:
        return None, f"the {what}'s source {uri[:120]!r} is outside the registry"
    with tempfile.TemporaryDirectory(prefix="farmiq-dataset-") as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
                )
            )
        except Exception as exc:
            return None, f"cannot read the {what}: {str(exc)[:200]}"
        import pandas as pd

        try:
            df = pd.read_parquet(local) if local.suffix == ".parquet" else pd.read_csv(local)
        except Exception as exc:
            return None, f"the {what} is not CSV or Parquet: {str(exc)[:200]}"
    return df, None


def _feature_columns(di: Any, df: Any, feature_names: list[str] | None) -> list[str]:
    cols = feature_names or [c for c in df.columns if np.issubdtype(df[c].dtype, np.number)]
    if feature_names is None:
        targets = json.loads(di.dataset.profile or "{}").get("targets")
        cols = [c for c in cols if c != targets]
    return list(cols)


def holdout_from_dataset(
    di: Any, feature_names: list[str] | None, own_roots: list[str], tracking_uri: str | None
) -> tuple[tuple[Any, Any] | None, str | None]:
    """(features, targets) of a logged validation dataset, or (None, why-not)."""
    df, why = _load_dataset(di, own_roots, tracking_uri, "validation dataset")
    if df is None:
        return None, why
    # MLflow's dataset entity does not keep `targets`: the one column besides the model's
    # features, else a column named like a label.
    rest = [c for c in df.columns if feature_names and c not in feature_names]
    named = [c for c in TARGET_NAMES if c in df.columns]
    targets = rest[0] if len(rest) == 1 else (named[0] if named else None)
    if targets is None:
        return None, f"the validation dataset has no targets column ({', '.join(TARGET_NAMES)})"
    cols = [c for c in _feature_columns(di, df, feature_names) if c != targets]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        return None, f"the validation dataset lacks feature columns {missing}"
    return (df[cols].to_numpy(dtype=np.float32), df[targets].to_numpy()), None


def reference_from_dataset(
    di: Any, feature_names: list[str] | None, own_roots: list[str], tracking_uri: str | None
) -> tuple[dict[str, Any] | None, str | None]:
    """Load a logged training dataset (CSV/Parquet in the registry's stores) and build the
    drift reference over the model's feature columns. Returns (reference, why-not)."""
    from farmiq.drift_reference import build_reference

    df, why = _load_dataset(di, own_roots, tracking_uri, "training dataset")
    if df is None:
        return None, why
    cols = _feature_columns(di, df, feature_names)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        return None, f"the training dataset lacks feature columns {missing}"
    try:
        return build_reference({c: df[c].to_numpy() for c in cols}), None
    except ValueError as exc:
        return None, f"cannot build a drift reference from the dataset: {exc}"


def lineage_of_source(
    client: Any,
    uri: str,
    *,
    feature_names: list[str] | None,
    own_roots: list[str],
    tracking_uri: str | None,
) -> SourceLineage:
    lin = SourceLineage(source_uri=uri, run_id=source_run_id(client, uri))
    if lin.run_id is None:
        lin.notes.append("no source run: no dataset lineage")
        return lin
    try:
        run = client.get_run(lin.run_id)
    except Exception:
        lin.notes.append(f"source run {lin.run_id} not found")
        return lin
    tags = dict(run.data.tags or {})
    if str(tags.get("farmiq.parent_version", "")).isdigit():
        lin.parent_version = int(tags["farmiq.parent_version"])
    try:
        window = json.loads(tags.get("farmiq.data_window", "null"))
        if isinstance(window, list) and len(window) == 2:
            lin.data_window = [float(window[0]), float(window[1])]
    except (TypeError, ValueError):
        pass
    roots = [*own_roots, run.info.artifact_uri]  # the run's own artifacts or the registry's
    hold = holdout_dataset(run)
    if hold is not None:
        lin.holdout, why = holdout_from_dataset(hold, feature_names, roots, tracking_uri)
        if why:
            lin.notes.append(f"no calibration: {why}")
    di = training_dataset(run)
    if di is not None:
        lin.dataset = {
            "name": di.dataset.name,
            "digest": di.dataset.digest,
            "source": _dataset_uri(di.dataset),
        }
    with tempfile.TemporaryDirectory(prefix="farmiq-ref-") as tmp:
        try:
            path = client.download_artifacts(lin.run_id, REFERENCE_ARTIFACT, tmp)
            lin.reference = json.loads(Path(path).read_text())
            lin.reference_from = "run artifact"
            return lin
        except Exception:  # most runs have none; fall back to the dataset
            pass
    if di is None:
        lin.notes.append("the source run logged no training dataset: no drift reference")
        return lin
    lin.reference, why = reference_from_dataset(di, feature_names, roots, tracking_uri)
    if lin.reference is not None:
        lin.reference_from = "training dataset"
    elif why:
        lin.notes.append(why)
    return lin
