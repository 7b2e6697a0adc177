"""The specification's feature API on a real Feast repository, and the cloud->gateway push
over the real Mosquitto broker."""

from __future__ import annotations

import queue
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from feature_streams import T0, make_readings

from control_plane.api.features import router
from control_plane.feature_store import (
    FeastFeatureStore,
    online_store_config,
    publish_cloud_features,
)
from edge_agent.features.feature_cache import FeatureCache
from farmiq import topics
from farmiq.features import BARN_SCHEMA


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.state.feature_store = FeastFeatureStore(tmp_path / "repo")
    return TestClient(app)


def test_register_list_get_materialize_serve(client: TestClient) -> None:
    r = client.post("/api/v1/features/register")
    assert r.status_code == 200, r.text
    assert r.json()["schemas"] == {"barn": BARN_SCHEMA.version}

    listed = client.get("/api/v1/features/list").json()  # not mistaken for a feature name
    assert {f["name"] for f in listed["features"]} >= set(BARN_SCHEMA.names)
    assert listed["schemas"]["barn"]["version"] == BARN_SCHEMA.version

    f = client.get("/api/v1/features/co2_max_1h").json()
    assert (f["kind"], f["window_s"], f["aggregation"], f["sensor"]) == (
        "feature",
        3600,
        "max",
        "co2",
    )
    assert client.get("/api/v1/features/barn").json()["version"] == BARN_SCHEMA.version
    assert client.get("/api/v1/features/nope").status_code == 404

    readings = make_readings(["b1", "b2"], hours=2, seed=1)
    assert client.post("/api/v1/features/readings", json={"readings": readings}).json()[
        "appended"
    ] == len(readings)
    rows = [{"flock_id": "f1", "event_ts": T0, "flock_age_days": 30, "breed": "ross_308"}]
    assert (
        client.post("/api/v1/features/records/flock_profile", json={"rows": rows}).status_code
        == 200
    )
    end = datetime.fromtimestamp(readings[-1][2], UTC).isoformat()
    start = datetime.fromtimestamp(T0 - 60, UTC).isoformat()
    r = client.post("/api/v1/features/materialize", json={"start": start, "end": end})
    assert r.status_code == 200, r.text

    r = client.post(
        "/api/v1/features/serving",
        json={
            "schema": "barn",
            "entities": [{"barn_id": "b1", "flock_id": "f1"}, {"barn_id": "zz", "flock_id": "f1"}],
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()["features"]
    assert out["flock_age_days"] == [30, 30] and out["breed"] == ["ross_308", "ross_308"]
    with FeatureCache(client.app.state.feature_store.repo_dir / "gw.db") as cache:  # type: ignore[attr-defined]
        cache.ingest(readings)
        want = cache.window_value("barn_climate_1h", "temperature_max_1h", "b1", readings[-1][2])
    assert want is not None and out["temperature_max_1h"][0] == pytest.approx(want, rel=1e-6)
    assert out["temperature_max_1h"][1] is None  # unknown barn: no value, not a made-up one

    r = client.post("/api/v1/features/serving", json={"entities": [{"barn_id": "b1"}]})
    assert r.status_code == 422
    r = client.post("/api/v1/features/materialize", json={"views": ["nope"]})
    assert r.status_code == 404


def test_register_extra_view_and_reject_bad_ones(client: TestClient) -> None:
    view = {
        "name": "barn_heat_low_1h",
        "entity": {"name": "barn", "join_key": "barn_id"},
        "source": "sensor",
        "window_s": 3600,
        "features": [
            {
                "name": "temperature_min_1h",
                "dtype": "float32",
                "sensor": "temperature",
                "aggregation": "min",
                "staleness_ttl_s": 600,
                "missing": "default",
                "default": 0.0,
            }
        ],
    }
    r = client.post("/api/v1/features/register", json={"views": [view]})
    assert r.status_code == 200, r.text
    assert "barn_heat_low_1h" in r.json()["views"]
    got = client.get("/api/v1/features/barn_heat_low_1h:temperature_min_1h").json()
    assert (got["sensor"], got["aggregation"]) == ("temperature", "min")
    lux = {**view, "name": "barn_light_1h"}
    lux["features"] = [{**view["features"][0], "name": "lux_mean_1h", "sensor": "lux"}]  # type: ignore[index, dict-item]
    r = client.post("/api/v1/features/register", json={"views": [lux]})
    assert r.status_code == 422 and "lux" in r.json()["detail"]  # no gateway reports it
    bad = {**view, "name": "barn_bad", "window_s": None}
    r = client.post("/api/v1/features/register", json={"views": [bad]})
    assert r.status_code == 422 and "window" in r.json()["detail"]
    clash = {**view, "name": "barn_climate_1h"}
    r = client.post("/api/v1/features/register", json={"views": [clash]})
    assert r.status_code == 422 and "farmiq.features" in r.json()["detail"]


def test_online_store_urls() -> None:
    repo = Path("/r")
    assert online_store_config(None, repo) == {"type": "sqlite", "path": "/r/online.db"}
    pg = online_store_config("postgresql://farm:s3cret@db:5433/features", repo)
    assert (pg["type"], pg["host"], pg["port"], pg["database"], pg["user"]) == (
        "postgres",
        "db",
        5433,
        "features",
        "farm",
    )
    assert online_store_config("redis://:pw@cache:6380/2", repo) == {
        "type": "redis",
        "connection_string": "cache:6380,password=pw,db=2",
    }
    with pytest.raises(ValueError, match="unsupported"):
        online_store_config("mysql://x", repo)


class _Publisher:
    def __init__(self) -> None:
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}"
        )
        self.c.connect("127.0.0.1", 1883)
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)


def test_cloud_features_reach_the_gateway_over_mqtt(tmp_path: Path) -> None:
    store = FeastFeatureStore(tmp_path / "repo")
    store.write_cloud_features(
        "flock_profile",
        [
            {"flock_id": "f1", "event_ts": T0 - 86400, "flock_age_days": 20, "breed": "cobb_500"},
            {"flock_id": "f1", "event_ts": T0, "flock_age_days": 21, "breed": "cobb_500"},
            {"flock_id": "f2", "event_ts": T0, "flock_age_days": 5, "breed": "ross_308"},
        ],
    )
    gw = f"gw-{uuid.uuid4().hex[:8]}"
    pub = _Publisher()
    try:
        publish_cloud_features(
            store, pub, gw, {"flock_id": ["f1"]}, now=datetime.fromtimestamp(T0 + 60, UTC)
        )
        # the gateway connects later: the retained message is waiting for it
        got: queue.Queue[bytes] = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{gw}-agent")
        sub.on_message = lambda c, u, m: got.put(bytes(m.payload))
        sub.connect("127.0.0.1", 1883)
        sub.subscribe(topics.down(gw, topics.FEATURES), qos=1)
        sub.loop_start()
        payload = got.get(timeout=5)
        sub.loop_stop()
        sub.disconnect()
    finally:
        pub.publish(topics.down(gw, topics.FEATURES), b"", retain=True)  # clear the retained msg
        pub.c.loop_stop()
        pub.c.disconnect()
    with FeatureCache(tmp_path / "gw.db") as cache:
        assert cache.apply_cloud_features(payload) == 2  # f1 only, its latest record
        cache.ingest(
            [
                ("b1", s, T0 + 50, 1.0)
                for s in ("temperature", "humidity", "co2", "ammonia", "water_flow", "feed_flow")
            ]
        )
        vec, flags = cache.vector(BARN_SCHEMA, {"barn_id": "b1", "flock_id": "f1"}, now=T0 + 60)
        assert vec[-2:].tolist() == [21.0, 1.0] and flags[-2:] == ("ok", "ok")
