"""The specification's registry API: promote is an MLflow alias, GET /models/production
lists production versions, DELETE archives (reversibly, never deleting), errors say what
is wrong."""

from __future__ import annotations

import json
import uuid

import pytest
from mlflow import MlflowClient


@pytest.fixture(scope="module")
def model(control_plane, barn_model) -> str:
    name = f"reg-{uuid.uuid4().hex[:6]}"
    with control_plane.client() as c:
        for _ in range(2):
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": name},
            )
            assert r.status_code == 200, r.text
    return name


def _production(c) -> dict[str, int]:
    r = c.get("/api/v1/models/production")
    assert r.status_code == 200, r.text
    return {m["name"]: m["version"] for m in r.json()["models"]}


def test_promote_archive_restore_round_trip(control_plane, model) -> None:
    mlflow = MlflowClient(tracking_uri=f"sqlite:///{control_plane.data_dir / 'mlflow.db'}")
    with control_plane.client() as c:
        r = c.put(f"/api/v1/models/{model}/promote", json={"version": 1})
        assert r.status_code == 200 and "production" in r.json()["aliases"], r.text
        assert str(mlflow.get_model_version_by_alias(model, "production").version) == "1"
        assert _production(c)[model] == 1

        r = c.delete(f"/api/v1/models/{model}")
        assert r.status_code == 200 and r.json()["archived"] is True, r.text
        assert [v["version"] for v in r.json()["versions"]] == [1, 2]  # nothing deleted
        assert model not in _production(c)
        assert mlflow.get_registered_model(model).aliases == {}
        r = c.put(f"/api/v1/models/{model}/promote", json={"version": 2})
        assert r.status_code == 409 and "archived" in r.text, r.text
        r = c.post("/api/v1/deployments", json={"model": model, "devices": ["gw-x"]})
        assert r.status_code == 409 and "archived" in r.text, r.text
        assert model in {
            m["name"] for m in c.get("/api/v1/models?include_archived=true").json()["models"]
        }

        r = c.post(f"/api/v1/models/{model}/restore")
        assert r.status_code == 200, r.text
        assert r.json()["archived"] is False and r.json()["aliases"] == {"production": 1}
        assert _production(c)[model] == 1

        # A second restore (nothing archived) must not move production back to v1.
        assert c.put(f"/api/v1/models/{model}/promote", json={"version": 2}).status_code == 200
        r = c.post(f"/api/v1/models/{model}/restore")
        assert r.status_code == 200 and r.json()["aliases"] == {"production": 2}, r.text
        assert _production(c)[model] == 2


@pytest.mark.parametrize("alias", ["v1", "latest", "a/b", "", "Production", "x" * 100])
def test_an_alias_mlflow_refuses_is_a_422_naming_it(control_plane, model, alias) -> None:
    with control_plane.client() as c:
        r = c.put(f"/api/v1/models/{model}/promote", json={"version": 1, "alias": alias})
    assert r.status_code == 422, r.text
    assert "alias" in r.text


def test_unknown_models_and_versions_are_404s_naming_them(control_plane, model) -> None:
    with control_plane.client() as c:
        for r in (
            c.get("/api/v1/models/no-such-model"),
            c.delete("/api/v1/models/no-such-model"),
            c.post("/api/v1/models/no-such-model/restore"),
            c.put("/api/v1/models/no-such-model/promote", json={"version": 1}),
        ):
            assert r.status_code == 404 and "no-such-model" in r.text, r.text
        r = c.put(f"/api/v1/models/{model}/promote", json={"version": 99})
        assert r.status_code == 404 and "99" in r.text, r.text


def test_a_model_named_production_is_refused(control_plane, barn_model) -> None:
    """GET /api/v1/models/production is the production list: such a model would be unreachable."""
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", barn_model.onnx_bytes)},
            data={"name": "production"},
        )
        assert r.status_code == 422 and "reserved" in r.text, r.text
        r = c.post(
            "/api/v1/models/register", json={"name": "production", "source_uri": "runs:/x/m"}
        )
        assert r.status_code == 422 and "reserved" in r.text, r.text


def test_a_zipmap_model_is_converted_so_the_gateway_answers_probabilities(
    control_plane, tmp_path
) -> None:
    """skl2onnx's default output (a ZipMap) used to pass and then answer 500 on every
    inference; now the registry swaps it for the probability tensor before anything ships."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    from edge_agent.models.serving import LoadedModel, load_runtime
    from farmiq.bundle.builder import read_container
    from farmiq.bundle.format import Manifest

    X = np.random.default_rng(3).normal(size=(200, 4)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))
    name = f"zipmap-{uuid.uuid4().hex[:6]}"
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", to_onnx(clf, X[:1]).SerializeToString())},
            data={"name": name},
        )
        assert r.status_code == 200, r.text
        assert {o["name"]: o["dtype"] for o in r.json()["meta"]["outputs"]} == {
            "output_label": "int64",
            "output_probability": "float32",
        }
        r = c.post("/api/v1/bundles", json={"model": name, "version": 1})
        assert r.status_code == 200, r.text
        r = c.get(f"/api/v1/bundles/{r.json()['bundle_id']}/download")
        assert r.status_code == 200, r.text
    manifest_bytes, _, members = read_container(r.content)
    manifest = Manifest.model_validate_json(manifest_bytes)
    path = tmp_path / "model.onnx"
    path.write_bytes(members[manifest.model_file])
    out = LoadedModel(manifest, load_runtime(manifest, path), path).run({"X": X[:4]})
    np.testing.assert_allclose(out["output_probability"], clf.predict_proba(X[:4]), atol=1e-5)


@pytest.mark.parametrize(
    "uri", ["file:///etc/passwd", "/etc/passwd", "http://example.invalid/model", "s3://b/m"]
)
def test_a_source_outside_the_registry_is_refused_and_leaves_no_model(control_plane, uri) -> None:
    name = f"uri-{uuid.uuid4().hex[:6]}"
    with control_plane.client() as c:
        r = c.post("/api/v1/models/register", json={"name": name, "source_uri": uri})
        assert r.status_code == 422 and "not in the registry's stores" in r.text, r.text
        r = c.post(
            "/api/v1/models/register",
            json={"name": name, "source_uri": "runs:/" + "0" * 32 + "/model"},
        )
        assert r.status_code == 422 and "cannot read" in r.text, r.text
        assert c.get(f"/api/v1/models/{name}").status_code == 404


def test_invalid_serving_targets_are_refused_at_registration(control_plane, barn_model) -> None:
    name = f"serving-{uuid.uuid4().hex[:6]}"
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/models/register",
            files={"file": ("m.onnx", barn_model.onnx_bytes)},
            data={"name": name, "meta": json.dumps({"serving": {"targets": ["edge", "moon"]}})},
        )
        assert r.status_code == 422 and "serving.targets" in r.text, r.text
        assert c.get(f"/api/v1/models/{name}").status_code == 404
