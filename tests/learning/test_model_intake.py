"""A data scientist's models, logged with MLflow's ordinary API, become bundles a gateway
answers with: onnx (ZipMap too), sklearn (converted), TFLite for LiteRT and the MCU. What a
gateway could not serve is refused before anything is registered, naming the problem."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from control_plane.model_gate import GateError, check_model
from control_plane.model_registration import bundle_plan
from control_plane.registry import ModelRegistry, RegistryError
from edge_agent.models.serving import LoadedModel, load_runtime
from farmiq.bundle.builder import build_bundle, read_container
from farmiq.bundle.format import Manifest, TensorSpec
from farmiq.bundle.signing import Signer

TFLITE = Path(__file__).resolve().parents[2] / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    import mlflow

    root = tmp_path_factory.mktemp("reg")
    reg = ModelRegistry(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts")
    # The data scientist's own experiment (runs are logged there, then registered).
    reg.client.create_experiment("data-science", artifact_location=(root / "ds").as_uri())
    mlflow.set_experiment("data-science")
    return reg


@pytest.fixture(scope="module")
def trained() -> Any:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(20, 5, size=(400, 4)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1], [25, 35])
    return LogisticRegression(max_iter=500).fit(X, y), X


def _served(registry: ModelRegistry, name: str, version: int, tmp_path: Path) -> LoadedModel:
    """Build the bundle as the control plane does, then load it with the agent's runtime."""
    mv = registry.resolve(name, version)
    model = registry.model_bytes(name, version)
    plan = bundle_plan(model, mv.meta, None, registry.reference(name, version))
    data = build_bundle(
        model,
        name=name,
        version=version,
        signers=[Signer.generate()],
        runtime=plan.runtime,
        inputs=plan.inputs,
        outputs=plan.outputs,
        labels=mv.meta.get("labels"),
        serving=plan.serving,
        lineage=plan.lineage,
        calibration=mv.calibration,
    )
    manifest_bytes, _, members = read_container(data)
    manifest = Manifest.model_validate_json(manifest_bytes)
    path = tmp_path / manifest.model_file.replace("/", "_")
    path.write_bytes(members[manifest.model_file])
    return LoadedModel(manifest, load_runtime(manifest, path), path)


def test_zipmap_onnx_logged_with_mlflow_answers_probabilities(
    registry: ModelRegistry, trained: Any, tmp_path: Path
) -> None:
    import mlflow
    from skl2onnx import to_onnx

    clf, X = trained
    onx = to_onnx(clf, X[:1])  # skl2onnx's default: probabilities as a ZipMap
    assert any(n.op_type == "ZipMap" for n in onx.graph.node)
    with mlflow.start_run() as run:
        mlflow.onnx.log_model(onx, name="model", pip_requirements=["onnxruntime"])
    name = f"zipmap-{uuid.uuid4().hex[:6]}"
    mv = registry.register_uri(name, f"runs:/{run.info.run_id}/model")
    assert mv.meta["labels"] == ["0", "1", "2"]
    served = _served(registry, name, mv.version, tmp_path)
    out = served.run({"X": X[:5]})
    np.testing.assert_allclose(out["output_probability"], clf.predict_proba(X[:5]), atol=1e-5)
    assert served.manifest.lineage and served.manifest.lineage.run_id == run.info.run_id


def test_sklearn_flavor_is_converted_at_registration(
    registry: ModelRegistry, trained: Any, tmp_path: Path
) -> None:
    import mlflow

    clf, X = trained
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            clf, name="model", input_example=X[:3], pip_requirements=["scikit-learn"]
        )
    name = f"sk-{uuid.uuid4().hex[:6]}"
    mv = registry.register_uri(name, f"runs:/{run.info.run_id}/model")
    assert mv.meta["flavor"] == "sklearn" and mv.meta["gate"]["source"] == "input example"
    served = _served(registry, name, mv.version, tmp_path)
    out = served.run({"input": X[:7]})
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X[:7]), atol=1e-5)
    np.testing.assert_array_equal(out["label"], clf.predict(X[:7]))


def test_tflite_artifact_registers_for_litert_and_the_mcu(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    import mlflow
    from ai_edge_litert.interpreter import Interpreter

    with mlflow.start_run() as run:
        mlflow.log_artifact(str(TFLITE), "model")
    row = np.asarray([[31.0, 75.0, 22.0, 2.4]], np.float32)
    interp = Interpreter(model_path=str(TFLITE))
    interp.allocate_tensors()
    din, dout = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = din["quantization"]
    interp.set_tensor(din["index"], np.round(row / scale + zero).clip(-128, 127).astype(np.int8))
    interp.invoke()
    oscale, ozero = dout["quantization"]
    want = (interp.get_tensor(dout["index"]).astype(np.float32) - ozero) * oscale
    for runtime in ("litert", "mcu-tflite"):
        name = f"tfl-{runtime}-{uuid.uuid4().hex[:4]}"
        mv = registry.register_uri(
            name, f"runs:/{run.info.run_id}/model", meta={"runtime": runtime}
        )
        served = _served(registry, name, mv.version, tmp_path)
        assert served.manifest.runtime == runtime
        assert [i.name for i in served.manifest.inputs] == ["x"]
        out = served.run({"x": np.repeat(row, 3, axis=0)})  # a batch, run row by row
        np.testing.assert_allclose(out["output_0"], np.repeat(want, 3, axis=0), atol=1e-6)
    with pytest.raises(RegistryError) as err:  # an ONNX runtime cannot run a .tflite
        registry.register_onnx("tfl-wrong", TFLITE.read_bytes(), meta={"runtime": "onnxruntime"})
    assert err.value.status == 422 and "tflite" in str(err.value)


def _graph(node: Any, out: Any, extra_nodes: tuple[Any, ...] = ()) -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    g = helper.make_graph([*extra_nodes, node], "g", [x], [out])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_the_gate_names_what_a_gateway_could_not_serve() -> None:
    from onnx import TensorProto, helper

    from control_plane.model_intake import from_onnx_bytes

    def gate(data: bytes, **kw: Any) -> str:
        gm = from_onnx_bytes(data)
        with pytest.raises(GateError) as err:
            check_model(
                gm.model_bytes, runtime="onnxruntime", inputs=gm.inputs, outputs=gm.outputs, **kw
            )
        return str(err.value)

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    nan = _graph(
        helper.make_node("Sqrt", ["m"], ["y"]), y, (helper.make_node("Neg", ["x"], ["m"]),)
    )
    # Neg(x) < 0 for half of the generated rows: sqrt gives NaN
    assert "NaN or infinite" in gate(nan)
    scalar = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    reduce_all = helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)
    assert "one answer per row" in gate(_graph(reduce_all, scalar))
    seq = helper.make_tensor_sequence_value_info("y", TensorProto.FLOAT, None)
    assert "can only return tensors" in gate(
        _graph(helper.make_node("SequenceConstruct", ["x"], ["y"]), seq)
    )
    assert "3 classes but 2 labels" in gate(
        _graph(helper.make_node("Identity", ["x"], ["y"]), y), labels=["a", "b"]
    )
    assert "takes [None, 3]" in gate(
        _graph(helper.make_node("Identity", ["x"], ["y"]), y), example={"x": [[1.0, 2.0]]}
    )
    custom = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    g = helper.make_graph([custom], "g", [helper.make_tensor_value_info("x", 1, [None, 3])], [y])
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(GateError, match="ONNX Runtime cannot load"):
        check_model(
            model.SerializeToString(),
            runtime="onnxruntime",
            inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 3])],
            outputs=[TensorSpec(name="y", dtype="float32", shape=[None, 3])],
        )
    with pytest.raises(GateError, match="LiteRT cannot load"):
        check_model(
            b"\0\0\0\0TFL3" + b"\0" * 40,
            runtime="litert",
            inputs=[TensorSpec(name="x", dtype="float32", shape=[None, 4])],
            outputs=[TensorSpec(name="y", dtype="float32", shape=[None, 2])],
        )


def test_refused_registrations_leave_nothing_behind(registry: ModelRegistry) -> None:
    from onnx import TensorProto, helper

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    nan = _graph(helper.make_node("Log", ["m"], ["y"]), y, (helper.make_node("Neg", ["x"], ["m"]),))
    cases: list[tuple[Any, str]] = [
        (lambda n: registry.register_onnx(n, nan), "NaN"),
        (lambda n: registry.register_uri(n, "file:///etc/passwd"), "not in the registry's stores"),
        (lambda n: registry.register_uri(n, "runs:/" + "0" * 32 + "/model"), "cannot read"),
        (
            lambda n: registry.register_onnx(
                n, TFLITE.read_bytes(), meta={"serving": {"targets": ["edge", "moon"]}}
            ),
            "serving.targets",
        ),
        (lambda n: registry.register_onnx(n, b"not a model"), "not a valid ONNX model"),
    ]
    for register, why in cases:
        name = f"refused-{uuid.uuid4().hex[:6]}"
        with pytest.raises(RegistryError) as err:
            register(name)
        assert err.value.status == 422 and why in str(err.value), str(err.value)
        with pytest.raises(RegistryError) as missing:
            registry.get(name)
        assert missing.value.status == 404


def test_bundle_build_gates_a_version_registered_before_the_gate() -> None:
    """A version from before the gate (ZipMap kept, no specs in its metadata) is refused
    at bundle build with a 422, not signed and shipped."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    onx = to_onnx(LogisticRegression().fit(X, X[:, 0] > 0), X[:1]).SerializeToString()
    with pytest.raises(RegistryError) as err:
        bundle_plan(onx, {"task": "classification"}, None, None)
    assert err.value.status == 422 and "ZipMap" in str(err.value)
    with pytest.raises(RegistryError, match=r"serving\.max_batch"):
        bundle_plan(onx, {}, {"max_batch": 0}, None)


def test_bundles_without_lineage_keep_their_canonical_bytes() -> None:
    data = build_bundle(
        TFLITE.read_bytes(), name="old", version=1, signers=[Signer.generate()], runtime="litert"
    )
    manifest_bytes = read_container(data)[0]
    assert b"lineage" not in manifest_bytes
    assert Manifest.model_validate_json(manifest_bytes).canonical() == manifest_bytes


def test_an_external_run_with_a_logged_dataset_is_monitored_with_lineage(
    registry: ModelRegistry, trained: Any, tmp_path: Path
) -> None:
    """The drift reference comes from the training dataset the run logged with
    mlflow.log_input, so a version FarmIQ did not train is monitored too, and its bundle
    names the run, the dataset digest and the feature schema."""
    import mlflow
    import pandas as pd

    clf, X = trained
    features = ["temp_c", "humidity", "nh3", "co2"]
    df = pd.DataFrame(X, columns=features).assign(label=clf.predict(X))
    csv = tmp_path / "train.csv"
    df.to_csv(csv, index=False)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(csv), "data")
        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            df, source=mlflow.get_artifact_uri("data/train.csv"), targets="label", name="barns"
        )
        mlflow.log_input(dataset, context="training")
        mlflow.sklearn.log_model(
            clf, name="model", input_example=X[:2], pip_requirements=["scikit-learn"]
        )
    name = f"ext-{uuid.uuid4().hex[:6]}"
    mv = registry.register_uri(
        name,
        f"runs:/{run.info.run_id}/model",
        meta={"feature_names": features, "feature_schema": {"name": "barn", "version": "2"}},
    )
    assert mv.meta["monitored"] is True, mv.meta.get("lineage_notes")
    reference = registry.reference(name, mv.version)
    assert reference is not None and list(reference["features"]) == features
    assert reference["features"]["temp_c"]["n"] == len(X)
    served = _served(registry, name, mv.version, tmp_path)
    lineage = served.manifest.lineage
    assert lineage is not None and lineage.run_id == run.info.run_id
    assert lineage.dataset is not None and lineage.dataset.digest == dataset.digest
    assert lineage.flavor == "sklearn"


def test_a_logged_validation_dataset_calibrates_the_label_free_estimate(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """A version logged with plain MLflow gets the label-free estimate's calibration from
    the labelled rows its run logged as validation data (``mlflow.log_input(...,
    context="validation")``), fitted in the gateway runtime at registration; the estimate
    then expects about the accuracy the model really has on new rows."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from farmiq.cbpe import Calibration, estimate

    rng = np.random.default_rng(5)
    X = rng.normal(20, 5, size=(3000, 4)).astype(np.float32)
    y = np.digitize(X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 3, 3000), [25, 35])  # noisy
    clf = LogisticRegression(max_iter=500).fit(X[:1000], y[:1000])
    features = ["temp_c", "humidity", "nh3", "co2"]
    val = pd.DataFrame(X[1000:2000], columns=features).assign(label=y[1000:2000])
    csv = tmp_path / "validation.csv"
    val.to_csv(csv, index=False)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(csv), "data")
        ds = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            val, source=mlflow.get_artifact_uri("data/validation.csv"), targets="label"
        )
        mlflow.log_input(ds, context="validation")
        mlflow.sklearn.log_model(clf, name="model", input_example=X[:2])
    name = f"cal-{uuid.uuid4().hex[:6]}"
    mv = registry.register_uri(
        name, f"runs:/{run.info.run_id}/model", meta={"feature_names": features}
    )
    assert mv.calibration is not None, mv.meta.get("lineage_notes")
    cal = Calibration.from_dict(mv.calibration)
    assert cal.rows == 1000
    new_X, new_y = X[2000:], y[2000:]
    probs = clf.predict_proba(new_X)
    true_acc = float((probs.argmax(axis=1) == new_y).mean())
    assert 0.5 < true_acc < 0.95  # the noise makes it a real estimate
    assert estimate(cal, probs).expected_accuracy == pytest.approx(true_acc, abs=0.05)
    served = _served(registry, name, mv.version, tmp_path)  # and the bundle ships it
    assert served.manifest.calibration == "calibration.json"


def test_skip_gate_is_an_explicit_flag_that_the_bundle_build_honours(
    registry: ModelRegistry,
) -> None:
    from onnx import TensorProto, helper

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    nan = _graph(
        helper.make_node("Sqrt", ["m"], ["y"]), y, (helper.make_node("Neg", ["x"], ["m"]),)
    )
    with pytest.raises(RegistryError, match="skip_gate must be"):
        registry.register_onnx("skip-bad-flag", nan, meta={"skip_gate": "yes"})
    mv = registry.register_onnx(f"skip-{uuid.uuid4().hex[:6]}", nan, meta={"skip_gate": True})
    assert mv.meta["gate"] == {"skipped": True}
    plan = bundle_plan(registry.model_bytes(mv.name, mv.version), mv.meta, None, None)
    assert plan.gate == {"skipped": True}
