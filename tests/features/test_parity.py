"""Proof of parity: the gateway's windowed aggregates equal Feast's point-in-time features.

The same raw readings go to both sides. The gateway ingests them in batches as they would
arrive (shuffled inside each batch, with a redelivered batch) and is asked at time t; Feast
answers ``get_historical_features`` for the same (barn, t). Query times include the
exact window edges (a reading's ts, ts + W and 1 ms either side) and times inside silent
gaps where a window empties.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_streams import T0, make_readings

from control_plane.feature_store import FeastFeatureStore
from edge_agent.features.feature_cache import FeatureCache
from farmiq.features import VIEWS, SourceKind

SENSOR_VIEWS = [v for v in VIEWS if v.source is SourceKind.SENSOR]
BARNS = ["b1", "b2", "b3"]


def _query_times(readings: list[tuple[str, str, float, float]], rnd: random.Random) -> list[int]:
    """ms query times: random ones plus the edges of the 1 h and 24 h windows."""
    ts_ms = sorted({round(r[2] * 1000) for r in readings})
    lo, hi = ts_ms[0], ts_ms[-1]
    qs = {rnd.randrange(lo, hi) for _ in range(40)}
    for t in rnd.sample(ts_ms, 15):
        for w in (0, 3_600_000, 86_400_000):
            qs.update({t + w - 1, t + w, t + w + 1})
    return sorted(q for q in qs if q <= hi + 1)


def test_gateway_aggregates_equal_feast_historical_features(tmp_path: Path) -> None:
    rnd = random.Random(11)
    readings = make_readings(BARNS, hours=30, seed=3)
    queries = _query_times(readings, rnd)

    store = FeastFeatureStore(tmp_path / "repo")
    store.ingest_readings(readings)
    store.apply()

    # gateway: readings arrive in batches up to each query time, answered "now"
    gw: dict[tuple[str, int], list[float]] = {}
    refs = [(v, f) for v in SENSOR_VIEWS for f in v.features]
    with FeatureCache(tmp_path / "gw.db") as cache:
        i = 0
        for q in queries:
            batch = []
            while i < len(readings) and round(readings[i][2] * 1000) <= q:
                batch.append(readings[i])
                i += 1
            rnd.shuffle(batch)
            cache.ingest(batch)
            if batch and rnd.random() < 0.2:
                cache.ingest(batch)  # an MQTT redelivery must not change anything
            for barn in BARNS:
                gw[(barn, q)] = [
                    np.nan
                    if (x := cache.window_value(v.name, f.name, barn, q / 1000)) is None
                    else x
                    for v, f in refs
                ]

    entity_df = pd.DataFrame(
        [(b, q) for q in queries for b in BARNS], columns=["barn_id", "event_timestamp"]
    )
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], unit="ms", utc=True)
    feast_df = store.historical_features([f"{v.name}:{f.name}" for v, f in refs], entity_df)

    expected = np.array([gw[(b, q)] for q in queries for b in BARNS], dtype=np.float32)
    got = feast_df[[f.name for _, f in refs]].to_numpy(dtype=np.float32, na_value=np.nan)
    assert got.shape == expected.shape
    both_missing = np.isnan(got) & np.isnan(expected)
    assert (np.isnan(got) == np.isnan(expected)).all(), "missing in one place only"
    assert np.allclose(got[~both_missing], expected[~both_missing], rtol=1e-6, atol=1e-6)
    # the data really exercised the edges: some windows were empty, most were not
    assert 0 < both_missing.sum() < both_missing.size / 2


def test_feast_online_features_match_gateway_vector_now(tmp_path: Path) -> None:
    readings = make_readings(["b1"], hours=26, seed=5)
    now = readings[-1][2] + 30
    # every sensor reported recently, so the gateway's vector is fresh (flags all "ok")
    readings += [("b1", s, now - 5, 7.5) for s in {r[1] for r in readings}]
    store = FeastFeatureStore(tmp_path / "repo")
    store.ingest_readings(readings)
    store.write_cloud_features(
        "flock_profile",
        [{"flock_id": "f1", "event_ts": now - 3600, "flock_age_days": 19, "breed": "hubbard_jv"}],
    )
    store.apply()
    end = datetime.fromtimestamp(now, UTC)
    store.materialize(start=datetime.fromtimestamp(T0 - 86400, UTC), end=end)
    online = store.online_features("barn", [{"barn_id": "b1", "flock_id": "f1"}])

    with FeatureCache(tmp_path / "gw.db") as cache:
        cache.ingest(readings)
        cache.apply_cloud_features(store.cloud_payload({"flock_id": ["f1"]}, now=end))
        vec, flags = cache.vector("barn", {"barn_id": "b1", "flock_id": "f1"}, now=now)
    from farmiq.features import BARN_SCHEMA

    assert flags == ("ok",) * len(vec)
    for i, name in enumerate(BARN_SCHEMA.names):
        value = online[name][0]
        if name == "breed":
            assert value == "hubbard_jv" and vec[i] == 2.0
        else:
            assert vec[i] == pytest.approx(value, rel=1e-6), name
