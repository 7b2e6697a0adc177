"""Model intake: whatever a data scientist logged with MLflow, as a file a gateway runs.

- ONNX (``mlflow.onnx`` flavor or an uploaded ``.onnx``): checked, and skl2onnx's default
  ZipMap output (a sequence of maps, which no gateway can return as JSON) is replaced by
  the probability tensor under the same output name, its class labels kept as labels.
- scikit-learn (``mlflow.sklearn`` flavor): converted to ONNX with skl2onnx, ZipMap off.
- TFLite / LiteRT (an uploaded ``.tflite``, or a ``.tflite`` logged as an artifact): kept
  as it is, for the ``litert`` and ``mcu-tflite`` runtimes.

Input and output specs come from the model itself (the ONNX graph, the LiteRT
interpreter), with feature axes the graph leaves open filled in from the MLflow signature
or the input example. Source URIs are limited to the registry's own stores.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from farmiq.bundle.format import Serving, TensorSpec

# URI schemes that resolve through the tracking server / registry (never a raw path).
REGISTRY_SCHEMES = ("runs", "models", "mlflow-artifacts")
TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier, bytes 4..8
RUNTIMES = ("onnxruntime", "litert", "mcu-tflite")
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # what the gateways' ONNX Runtime runs


class IntakeError(ValueError):
    """The source cannot become a gateway model; the message says why (an HTTP 422)."""


@dataclass
class GatewayModel:
    """A model in a form a gateway runtime loads, with what is known about it."""

    runtime: str  # onnxruntime or litert (litert models also serve mcu-tflite)
    model_bytes: bytes
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    flavor: str  # onnx, sklearn, tflite
    example: Any = None  # the MLflow input example, as arrays
    labels: list[str] | None = None
    signature: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def extension(self) -> str:
        return "onnx" if self.runtime == "onnxruntime" else "tflite"


# -- source URIs ---------------------------------------------------------------------------
def check_source_uri(uri: str, own_roots: list[str]) -> None:
    """Allow registry URIs (``runs:/``, ``models:/``, ``mlflow-artifacts:``) and URIs
    inside the registry's own artifact roots; refuse anything else (``file:///etc/passwd``,
    ``http://...``, a path elsewhere) so registration cannot read arbitrary files."""
    parsed = urlparse(uri)
    if parsed.scheme in REGISTRY_SCHEMES:
        if ".." in unquote(parsed.path).split("/"):
            raise IntakeError(f"source URI {uri[:200]!r} has a '..' segment")
        return
    for root in own_roots:
        if _inside(uri, root):
            return
    raise IntakeError(
        f"source URI {uri[:200]!r} is not in the registry's stores: use runs:/, models:/ or "
        "mlflow-artifacts: URIs (or upload the file)"
    )


def _inside(uri: str, root: str) -> bool:
    u, r = urlparse(uri), urlparse(root)
    if r.scheme in ("", "file") and u.scheme in ("", "file"):
        try:
            path = Path(unquote(u.path)).resolve()
            base = Path(unquote(r.path)).resolve()
        except (OSError, RuntimeError):
            return False
        return path == base or base in path.parents
    if u.scheme != r.scheme or u.netloc != r.netloc:
        return False
    parts = unquote(u.path).split("/")
    return ".." not in parts and unquote(u.path).startswith(unquote(r.path).rstrip("/") + "/")


# -- metadata ------------------------------------------------------------------------------
def validate_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Check the registration metadata a bundle build will use, so a bad value is a 422
    now and not a 500 at bundle build."""
    meta = dict(meta or {})
    task = meta.get("task", "classification")
    if task not in ("classification", "regression"):
        raise IntakeError(f"task must be 'classification' or 'regression', not {task!r}")
    for key in ("labels", "feature_names"):
        v = meta.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            raise IntakeError(f"{key} must be a list of strings")
    schema = meta.get("feature_schema")
    if schema is not None and (
        not isinstance(schema, dict) or not isinstance(schema.get("name"), str)
    ):
        raise IntakeError("feature_schema must be {name, version}")
    if schema is not None:
        meta["feature_schema"] = {
            "name": schema["name"],
            "version": str(schema.get("version", "1")),
        }
    if not isinstance(meta.get("skip_gate", False), bool):
        raise IntakeError("skip_gate must be true or false")
    runtime = meta.get("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        raise IntakeError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if meta.get("serving") is not None:
        from pydantic import ValidationError

        try:
            meta["serving"] = Serving.model_validate(meta["serving"]).model_dump(mode="json")
        except ValidationError as exc:
            errs = "; ".join(
                f"serving.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise IntakeError(f"invalid serving: {errs}") from None
    return meta


# -- ONNX ----------------------------------------------------------------------------------
def strip_zipmap(model: Any) -> tuple[Any, list[str] | None, bool]:
    """Replace each ZipMap node by an Identity of its probability tensor, keeping the output
    name, and declare that output as a float tensor [N, classes]. Returns the model, the
    class labels the ZipMap carried, and whether anything changed."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    labels: list[str] | None = None
    changed = False
    for node in list(graph.node):
        if node.op_type != "ZipMap":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        raw = attrs.get("classlabels_strings") or attrs.get("classlabels_int64s") or []
        labels = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
        src, dst = node.input[0], node.output[0]
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(idx, helper.make_node("Identity", [src], [dst], name=f"{dst}_tensor"))
        for i, out in enumerate(graph.output):
            if out.name == dst:
                graph.output.remove(out)
                graph.output.insert(
                    i, helper.make_tensor_value_info(dst, TensorProto.FLOAT, [None, len(labels)])
                )
        changed = True
    if changed:
        onnx.checker.check_model(model)
    return model, labels or None, changed


def from_onnx_bytes(data: bytes) -> GatewayModel:
    import onnx

    from farmiq.bundle.builder import onnx_io_specs

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        raise IntakeError(f"not a valid ONNX model: {str(exc)[:300]}") from None
    model, labels, changed = strip_zipmap(model)
    notes = []
    if changed:
        data = model.SerializeToString()
        notes.append("ZipMap output replaced by its probability tensor")
    try:
        inputs, outputs = onnx_io_specs(data)
    except Exception as exc:
        raise IntakeError(f"ONNX Runtime cannot load the model: {str(exc)[:300]}") from None
    return GatewayModel("onnxruntime", data, inputs, outputs, "onnx", labels=labels, notes=notes)


# -- TFLite --------------------------------------------------------------------------------
def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER


def from_tflite_bytes(data: bytes) -> GatewayModel:
    from farmiq.bundle.builder import tflite_io_specs

    try:
        inputs, outputs = tflite_io_specs(data)
    except Exception as exc:
        raise IntakeError(f"LiteRT cannot load the model: {str(exc)[:300]}") from None
    return GatewayModel("litert", data, inputs, outputs, "tflite")


def from_bytes(data: bytes) -> GatewayModel:
    """An uploaded model file: TFLite (by its flatbuffer identifier) or ONNX."""
    return from_tflite_bytes(data) if is_tflite(data) else from_onnx_bytes(data)


# -- scikit-learn --------------------------------------------------------------------------
def from_sklearn(estimator: Any, n_features: int, example: Any = None) -> GatewayModel:
    """Convert with skl2onnx, ZipMap off so probabilities are a tensor."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None
    try:
        onx = to_onnx(
            estimator,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        raise IntakeError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {str(exc)[:300]}"
        ) from None
    gm = from_onnx_bytes(onx.SerializeToString())
    gm.flavor = "sklearn"
    classes = getattr(final, "classes_", None)
    if classes is not None:
        gm.labels = [str(c) for c in classes]
    gm.notes.append(f"converted from scikit-learn {type(estimator).__name__} with skl2onnx")
    if example is not None and not isinstance(example, dict):
        gm.example = {"input": np.asarray(example, dtype=np.float32)}
    return gm


# -- MLflow models -------------------------------------------------------------------------
def _signature(mlmodel: Any) -> dict[str, Any] | None:
    sig = getattr(mlmodel, "signature", None)
    return sig.to_dict() if sig is not None else None  # type: ignore[no-any-return]


def _signature_width(sig: dict[str, Any] | None) -> int | None:
    """Number of input features an MLflow signature declares (tensor or columns)."""
    if not sig or not sig.get("inputs"):
        return None
    spec = json.loads(sig["inputs"])
    if len(spec) == 1 and spec[0].get("type") == "tensor":
        shape = spec[0].get("tensor-spec", {}).get("shape") or []
        return int(shape[-1]) if shape and shape[-1] > 0 else None
    if all("name" in s for s in spec):
        return len(spec)
    return None


def _example(mlmodel: Any, path: Path) -> Any:
    try:
        ex = mlmodel.load_input_example(str(path))
    except Exception:  # a missing or unreadable example is no reason to refuse the model
        return None
    if ex is None:
        return None
    if hasattr(ex, "to_numpy"):  # a pandas DataFrame
        return np.asarray(ex.to_numpy(), dtype=np.float32)
    if isinstance(ex, dict):
        return {k: np.asarray(v) for k, v in ex.items()}
    return np.asarray(ex)


def _fill_shapes(gm: GatewayModel, sig_width: int | None) -> None:
    """Feature axes the graph leaves open, from the input example or the signature."""
    width = sig_width
    ex = gm.example
    if isinstance(ex, np.ndarray) and ex.ndim == 2:
        width = int(ex.shape[1])
    if width is None or len(gm.inputs) != 1:
        return
    spec = gm.inputs[0]
    if len(spec.shape) == 2 and spec.shape[1] is None:
        gm.inputs[0] = spec.model_copy(update={"shape": [spec.shape[0], width]})


def from_mlflow_dir(path: Path) -> GatewayModel:
    """A downloaded MLflow model directory (an ``MLmodel`` file), or a directory or file
    holding exactly one ``.onnx`` / ``.tflite``."""
    if path.is_file():
        return from_bytes(path.read_bytes())
    mlmodel_file = path / "MLmodel"
    if not mlmodel_file.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".onnx", ".tflite"))
        if len(files) != 1:
            raise IntakeError(
                f"no MLflow model there (no MLmodel file) and {len(files)} .onnx/.tflite files"
            )
        return from_bytes(files[0].read_bytes())
    from mlflow.models import Model

    try:
        mlmodel = Model.load(str(path))
    except Exception as exc:
        raise IntakeError(f"unreadable MLmodel file: {str(exc)[:300]}") from None
    flavors = mlmodel.flavors or {}
    sig = _signature(mlmodel)
    example = _example(mlmodel, path)
    if "onnx" in flavors:
        data_file = path / flavors["onnx"].get("data", "model.onnx")
        gm = from_onnx_bytes(data_file.read_bytes())
        if isinstance(example, np.ndarray) and len(gm.inputs) == 1:
            gm.example = {gm.inputs[0].name: example}
        elif isinstance(example, dict):
            gm.example = example
    elif "sklearn" in flavors:
        import mlflow.sklearn

        try:
            est = mlflow.sklearn.load_model(str(path))
        except Exception as exc:
            raise IntakeError(f"cannot load the scikit-learn model: {str(exc)[:300]}") from None
        width = _signature_width(sig)
        if isinstance(example, np.ndarray) and example.ndim == 2:
            width = int(example.shape[1])
        width = width or getattr(est, "n_features_in_", None)
        if not width:
            raise IntakeError(
                "cannot tell the scikit-learn model's number of features: log it with a "
                "signature or an input example"
            )
        gm = from_sklearn(est, int(width), example)
    else:
        tfl = sorted(path.rglob("*.tflite"))
        if len(tfl) != 1:
            raise IntakeError(
                f"MLflow flavors {sorted(flavors)}: FarmIQ takes onnx, sklearn, or a model "
                "directory holding one .tflite"
            )
        gm = from_tflite_bytes(tfl[0].read_bytes())
        if isinstance(example, np.ndarray) and len(gm.inputs) == 1:
            gm.example = {gm.inputs[0].name: example}
    gm.signature = sig
    _fill_shapes(gm, _signature_width(sig))
    if gm.example is not None and not isinstance(gm.example, dict):
        gm.example = {gm.inputs[0].name: gm.example}
    return gm


def from_uri(uri: str, tracking_uri: str | None = None) -> GatewayModel:
    """Download an MLflow model (``runs:/``, ``models:/``, ``mlflow-artifacts:`` or a path in
    the registry's store) and take it in."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="farmiq-intake-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            raise IntakeError(f"cannot read {uri[:200]!r}: {str(msg)[:300]}") from None
        return from_mlflow_dir(Path(local))
