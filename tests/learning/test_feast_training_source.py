"""An entity-keyed model retrains on features from the Feast offline store (issue 15): the
gateways send labels as (entity, time, truth), and the learning loop reads each labelled
moment's features point in time from the control plane's Feast store (the sensor views'
aggregates of the readings gateways uploaded, the flock records), trains on them, and the
candidate it registers beats a champion that never saw those features. Labels whose
features Feast lacks are left out; a schema the store does not serve is one clear error."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from control_plane.feature_store import FeastFeatureStore
from control_plane.learning.examples import ExampleStore
from control_plane.learning.loop import LearningConfig, LearningLoop
from control_plane.registry import ModelRegistry
from control_plane.security.audit_log import create_audit_table
from edge_agent.telemetry.feedback_upload import labelled_examples
from farmiq.features import BARN_SCHEMA

MODEL = "barn-entity"
LABELS = ["calm", "stressed"]
T0 = 1_790_000_000.0
BARNS = ["b1", "b2", "b3"]


def _readings(rng: np.random.Generator) -> list[tuple[str, str, float, float]]:
    """Six hours of every sensor in three barns, one reading a minute; each barn's heat
    and ammonia wander hour by hour, so the labels below depend on when they were given."""
    out = []
    for b_i, barn in enumerate(BARNS):
        for h in range(6):
            temp = 22 + 4 * np.sin(h + b_i) + rng.normal(0, 0.5)
            nh3 = 10 + 6 * np.cos(1.3 * h + b_i)
            for m in range(60):
                t = T0 + h * 3600 + m * 60 + rng.uniform(0, 5)
                for sensor, v in (("temperature", temp + rng.normal(0, 0.3)),
                                  ("humidity", 60 + rng.normal(0, 3)),
                                  ("co2", 1500 + rng.normal(0, 100)),
                                  ("ammonia", nh3 + rng.normal(0, 0.5)),
                                  ("water_flow", 0.5), ("feed_flow", 0.2)):  # fmt: skip
                    out.append((barn, sensor, round(t, 3), float(v)))
    return sorted(out, key=lambda r: r[2])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import mlflow
    from sklearn.linear_model import LogisticRegression

    tmp_path = tmp_path_factory.mktemp("feast-loop")
    rng = np.random.default_rng(3)
    store = FeastFeatureStore(tmp_path / "repo")
    store.ingest_readings(_readings(rng))
    store.write_cloud_features(
        "flock_profile",
        [{"flock_id": f"f{i}", "event_ts": T0 - 86400, "flock_age_days": 20 + i,
          "breed": "ross_308"} for i in range(3)],
    )  # fmt: skip
    store.apply()
    # Farmers' labels through the day: stressed when the last hour was hot AND the
    # ammonia peaked high (the rule reads the same aggregates the gateway serves).
    ts = T0 + 3600 + rng.uniform(0, 5 * 3600, 900)
    barn_i = rng.integers(0, 3, 900)
    ents = [{"barn_id": BARNS[i], "flock_id": f"f{i}"} for i in barn_i]
    edf = pd.DataFrame(ents)
    edf["event_timestamp"] = pd.to_datetime(ts * 1000, unit="ms", utc=True)
    truth_df = store.historical_features(
        ["barn_climate_1h:temperature_mean_1h", "barn_climate_1h:ammonia_max_1h"], edf
    )
    stressed = (truth_df["temperature_mean_1h"] > 23.0) & (truth_df["ammonia_max_1h"] > 11.0)
    labels = [LABELS[int(s)] for s in stressed]

    registry = ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    engine = create_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    create_audit_table(engine)
    examples = ExampleStore(engine)
    examples.create_tables()
    # the champion never learnt the rule: fitted on noise
    X0 = rng.normal(20, 10, (200, len(BARN_SCHEMA.features))).astype(np.float32)
    v1 = LogisticRegression().fit(X0, rng.integers(0, 2, 200))
    registry.client.create_experiment("ds", artifact_location=(tmp_path / "ds").as_uri())
    mlflow.set_experiment("ds")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(v1, name="model", input_example=X0[:2])
    meta = {"labels": LABELS, "feature_names": list(BARN_SCHEMA.names),
            "feature_schema": {"name": BARN_SCHEMA.name, "version": BARN_SCHEMA.version}}  # fmt: skip
    mv = registry.register_uri(MODEL, f"runs:/{run.info.run_id}/model", meta=meta)
    registry.promote(MODEL, mv.version)
    cfg = LearningConfig.from_mapping(
        {"models": {MODEL: {"min_rows": 300, "promotion": {"margin": 0.05, "min_holdout": 100}}}}
    )
    loop = LearningLoop(registry, examples, cfg, features=lambda: store)
    return store, examples, loop, registry, ents, ts, labels


def test_entity_labels_train_on_feast_features_and_win(world: Any) -> None:
    _, examples, loop, registry, ents, ts, labels = world
    # what the gateway sends: POST /api/v1/feedback items with the entity, no vector
    body = {"model": MODEL, "items": [
        {"prediction": "calm", "truth": lab, "entity": e, "ts": float(t)}
        for e, t, lab in zip(ents, ts, labels, strict=True)]}  # fmt: skip
    model, ex = labelled_examples(body)
    assert model == MODEL and len(ex) == 900 and "inputs" not in ex[0]
    batch = {"type": "feedback_batch", "model": MODEL, "examples": ex}
    assert examples.ingest("gw-1", json.dumps(batch).encode()) == 900
    assert examples.ingest("gw-1", json.dumps(batch).encode()) == 0  # stored once

    res = loop.run(MODEL, since=T0, until=T0 + 6 * 3600, decision_id=1)
    assert res["ok"], res
    cmp = res["comparison"]
    assert res["status"] == "promoted", res
    assert cmp["challenger"] >= 0.9 and cmp["challenger"] - cmp["champion"] >= 0.05, cmp
    assert registry.resolve(MODEL).version == res["candidate_version"]

    # the training run logged the Feast rows it trained on, in the schema's order
    run = registry.client.get_run(res["run_id"])
    (logged,) = [d.dataset for d in run.inputs.dataset_inputs]
    cols = [c["name"] for c in json.loads(logged.schema)["mlflow_colspec"]]
    assert cols[: len(BARN_SCHEMA.names)] == list(BARN_SCHEMA.names), cols


def test_labels_without_features_are_left_out_and_a_foreign_schema_is_refused(
    world: Any,
) -> None:
    store, examples, loop, registry, ents, ts, labels = world
    from control_plane.learning.feast_source import training_rows

    lost = [{"barn_id": "nowhere", "flock_id": "f0"}] * 5  # Feast knows no such barn
    X, kept = training_rows(store, BARN_SCHEMA, ents[:20] + lost, np.concatenate([ts[:20], ts[:5]]))
    assert X.shape == (20, len(BARN_SCHEMA.features)) and kept.tolist() == list(range(20))
    assert np.isfinite(X).all()
    breed = BARN_SCHEMA.names.index("breed")
    assert set(X[:, breed]) == {0.0}  # encoded as the gateway encodes it (ross_308 = 0)

    with pytest.raises(ValueError, match="join keys"):
        training_rows(store, BARN_SCHEMA, [{"barn_id": "b1"}], ts[:1])
    examples.ingest("gw-1", {"model": MODEL, "examples": [
        {"entity": e, "ts": float(t), "truth": lab}
        for e, t, lab in zip(ents[:400], ts[:400], labels[:400], strict=True)]})  # fmt: skip
    meta = registry.resolve(MODEL).meta
    with pytest.raises(ValueError, match="not the Feast store's"):
        loop._examples(MODEL, {**meta, "feature_schema": {"name": "barn", "version": "v9-x"}},
                       T0, T0 + 6 * 3600)  # fmt: skip
