"""Gateway feature cache: windows, rules, dedup, reopen, retention, cloud features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from feature_streams import T0

from edge_agent.features.feature_cache import (
    FLAG_DEFAULT,
    FLAG_OK,
    FLAG_STALE,
    FeatureCache,
    FeaturePayloadError,
    FeatureUnavailable,
)
from farmiq.features import BARN_SCHEMA

KEYS = {"barn_id": "b1", "flock_id": "f1"}
CLIMATE = ("temperature", "humidity", "co2", "ammonia")


def cloud_payload(age: int = 21, breed: str = "ross_308", ts: float = T0) -> bytes:
    return json.dumps(
        {
            "kind": "farmiq-features/1",
            "views": {
                "flock_profile": [
                    {
                        "entity_id": "f1",
                        "event_ts": ts,
                        "values": {"flock_age_days": age, "breed": breed},
                    }
                ]
            },
        }
    ).encode()


def fill(cache: FeatureCache, t_end: float, every: float = 60.0, hours: float = 25.0) -> None:
    rows = []
    t = t_end - hours * 3600
    i = 0
    while t <= t_end:
        for s in CLIMATE:
            rows.append(("b1", s, t, 20.0 + (i % 10)))
        rows.append(("b1", "water_flow", t, 2.0))
        rows.append(("b1", "feed_flow", t, 0.5))
        t += every
        i += 1
    cache.ingest(rows)


def test_window_is_open_left_closed_right(cache: FeatureCache) -> None:
    cache.ingest([("b1", "temperature", T0, 10.0), ("b1", "temperature", T0 + 1800, 20.0)])
    v = lambda t: cache.window_value("barn_climate_1h", "temperature_mean_1h", "b1", t)  # noqa: E731
    assert v(T0 - 0.001) is None  # before the first reading: empty window
    assert v(T0) == 10.0  # closed on the right: the reading at t counts
    assert v(T0 + 1800) == 15.0
    assert v(T0 + 3599.999) == 15.0
    assert v(T0 + 3600) == 20.0  # open on the left: the reading at t - 1h has left
    assert v(T0 + 5400) is None  # both gone: missing, never 0


def test_vector_assembles_schema_in_order(cache: FeatureCache) -> None:
    fill(cache, T0)
    cache.apply_cloud_features(cloud_payload(age=21, breed="cobb_500"))
    vec, flags = cache.vector(BARN_SCHEMA, KEYS, now=T0)
    assert vec.dtype == np.float32 and vec.shape == (len(BARN_SCHEMA.features),)
    assert flags == (FLAG_OK,) * len(vec)
    named = dict(zip(BARN_SCHEMA.names, vec.tolist(), strict=True))
    # 61 readings in (t-1h, t]: values cycle 20..29
    expected = [20.0 + (i % 10) for i in range(25 * 60 + 1)][-60:]
    assert named["temperature_mean_1h"] == pytest.approx(sum(expected) / 60, rel=1e-6)
    assert named["temperature_max_1h"] == 29.0
    assert named["water_flow_sum_24h"] == pytest.approx(2.0 * 24 * 60, rel=1e-6)
    assert named["flock_age_days"] == 21.0
    assert named["breed"] == 1.0  # index of cobb_500 in BREEDS


def test_stale_sensor_uses_last_value_with_flag_and_error_rule_refuses(cache: FeatureCache) -> None:
    fill(cache, T0)
    cache.apply_cloud_features(cloud_payload(ts=T0))
    fresh, _ = cache.vector(BARN_SCHEMA, KEYS, now=T0)
    # 20 minutes without readings: climate TTL (10 min) exceeded; ammonia's rule is error
    with pytest.raises(FeatureUnavailable) as err:
        cache.vector(BARN_SCHEMA, KEYS, now=T0 + 1200)
    assert err.value.feature == "ammonia_max_1h" and "old" in err.value.reason
    # keep ammonia fresh: the other climate features come back as their last value, flagged
    cache.ingest([("b1", "ammonia", T0 + 1199, 5.0)])
    vec, flags = cache.vector(BARN_SCHEMA, KEYS, now=T0 + 1200)
    i = BARN_SCHEMA.names.index("temperature_mean_1h")
    assert flags[i] == FLAG_STALE
    assert vec[i] == fresh[i]  # the value as of the last reading, not a shrunken window
    assert flags[BARN_SCHEMA.names.index("ammonia_max_1h")] == FLAG_OK
    assert flags[BARN_SCHEMA.names.index("water_flow_sum_24h")] == FLAG_OK  # 2 h TTL


def test_missing_entity_raises_and_missing_cloud_value_defaults(cache: FeatureCache) -> None:
    fill(cache, T0)
    with pytest.raises(FeatureUnavailable) as err:
        cache.vector(BARN_SCHEMA, {"barn_id": "nope", "flock_id": "f1"}, now=T0)
    assert "no readings" in err.value.reason
    # no flock record yet: age (last_value_flagged, never seen) is an error ...
    with pytest.raises(FeatureUnavailable, match="flock_age_days"):
        cache.vector(BARN_SCHEMA, KEYS, now=T0)
    with pytest.raises(KeyError, match="flock_id"):
        cache.vector(BARN_SCHEMA, {"barn_id": "b1"}, now=T0)
    # ... while breed (rule default) falls back to "other", flagged
    payload = json.dumps(
        {
            "kind": "farmiq-features/1",
            "views": {
                "flock_profile": [
                    {"entity_id": "f1", "event_ts": T0, "values": {"flock_age_days": 3}}
                ]
            },
        }
    ).encode()
    cache.apply_cloud_features(payload)
    vec, flags = cache.vector(BARN_SCHEMA, KEYS, now=T0)
    assert flags[-1] == FLAG_DEFAULT and vec[-1] == 3.0  # index of "other"
    # a stale flock age: last value, flagged
    later = T0 + 3 * 86400
    cache.ingest([("b1", s, later, 1.0) for s in (*CLIMATE, "water_flow", "feed_flow")])
    _, flags = cache.vector(BARN_SCHEMA, KEYS, now=later)
    assert flags[BARN_SCHEMA.names.index("flock_age_days")] == FLAG_STALE


def test_redelivered_readings_are_not_counted_twice(cache: FeatureCache) -> None:
    batch = [("b1", "water_flow", T0 + i, 1.0) for i in range(100)]
    first = cache.ingest(batch)
    again = cache.ingest([*batch, ("b1", "water_flow", T0 + 100, 1.0)])
    assert (first.accepted, again.accepted, again.duplicates) == (100, 1, 100)
    assert cache.window_value("barn_consumption_24h", "water_flow_sum_24h", "b1", T0 + 200) == 101.0
    assert cache.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 101


def test_out_of_order_and_malformed_readings(cache: FeatureCache) -> None:
    res = cache.ingest(
        [
            ("b1", "temperature", T0 + 10, 30.0),
            ("b1", "temperature", T0 + 5, 10.0),  # late, still inside the window
            ("b1", "temperature", T0 + 6, math.nan),
            ("b1", "temperature", "yesterday", 1.0),
            (None, "temperature", T0, 1.0),
            ("b1", "temperature", T0 + 7),  # too short
            ("b1", "soil_ph", T0, 6.5),  # no feature uses it: stored raw only
        ]
    )
    assert (res.accepted, res.rejected, res.unknown_sensor) == (3, 4, 1)
    assert cache.window_value("barn_climate_1h", "temperature_mean_1h", "b1", T0 + 10) == 20.0
    assert cache.window_value("barn_climate_1h", "temperature_max_1h", "b1", T0 + 10) == 30.0


def test_reopen_restores_windows_and_cloud_values(cache_path: Path) -> None:
    with FeatureCache(cache_path) as c:
        fill(c, T0)
        c.apply_cloud_features(cloud_payload())
        before = c.vector(BARN_SCHEMA, KEYS, now=T0 + 30)
        persisted = dict(c.conn.execute("SELECT feature, value FROM feature_values"))
    with FeatureCache(cache_path) as c:
        after = c.vector(BARN_SCHEMA, KEYS, now=T0 + 30)
        assert np.array_equal(before[0], after[0]) and before[1] == after[1]
        # the persisted aggregate rows hold the same values as the live windows
        i = BARN_SCHEMA.names.index("co2_mean_1h")
        assert persisted["co2_mean_1h"] == pytest.approx(float(after[0][i]), rel=1e-6)


def test_retention_prunes_old_raw_readings(cache_path: Path) -> None:
    with FeatureCache(cache_path, retention_s=3 * 86400) as c:
        c.ingest([("b1", "temperature", T0 + d * 86400, 20.0) for d in range(6)])
        assert (
            c.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 4
        )  # days 0-1 were more than 3 days old at day 5
        assert c.prune(now=T0 + 100 * 86400) == 4


def test_cloud_payload_validation_and_ordering(cache: FeatureCache) -> None:
    cache.apply_cloud_features(cloud_payload(age=21, ts=T0 + 100))
    assert cache.apply_cloud_features(cloud_payload(age=20, ts=T0)) == 0  # older: ignored
    for bad in (
        b"not json",
        b'{"kind": "other", "views": {}}',
        json.dumps({"kind": "farmiq-features/1", "views": {"barn_climate_1h": []}}).encode(),
        json.dumps(
            {
                "kind": "farmiq-features/1",
                "views": {
                    "flock_profile": [
                        {
                            "entity_id": "f1",
                            "event_ts": T0 + 200,
                            "values": {"flock_age_days": "old"},
                        }
                    ]
                },
            }
        ).encode(),
        json.dumps(
            {
                "kind": "farmiq-features/1",
                "views": {
                    "flock_profile": [
                        {"entity_id": "f1", "event_ts": T0 + 200, "values": {"flock_age_days": 30}},
                        {"entity_id": "f2", "event_ts": T0 + 200, "values": {"weight": 3}},
                    ]
                },
            }
        ).encode(),
    ):
        with pytest.raises(FeaturePayloadError):
            cache.apply_cloud_features(bad)
    cache.ingest([("b1", s, T0 + 100, 1.0) for s in (*CLIMATE, "water_flow", "feed_flow")])
    vec, _ = cache.vector(BARN_SCHEMA, KEYS, now=T0 + 100)
    assert vec[BARN_SCHEMA.names.index("flock_age_days")] == 21.0  # nothing partial applied


def test_can_serve_names_the_reason(cache: FeatureCache) -> None:
    ok, why = cache.can_serve("barn", BARN_SCHEMA.version)
    assert ok, why
    ok, why = cache.can_serve("barn", "v1-000000000000")
    assert not ok and "differs" in why and BARN_SCHEMA.version in why
    ok, why = cache.can_serve("pigs", "v1-abc")
    assert not ok and "unknown" in why


def test_incremental_aggregates_equal_recomputation(cache: FeatureCache) -> None:
    """The O(1)-per-reading running aggregates written on ingest (sum, mean, max through
    evictions, trims, re-summing and late readings) equal a from-scratch computation."""
    import random

    rnd = random.Random(5)
    t = T0
    for _ in range(100):
        batch = []
        for _ in range(200):
            t += rnd.uniform(1, 40)
            s = rnd.choice(("temperature", "water_flow"))
            # falling values put the max at the window's oldest edge, where eviction bugs hide
            falling = (t - T0) // 20000 % 2
            value = -(t - T0) / 10 + rnd.uniform(0, 1) if falling else rnd.uniform(-5, 50)
            batch.append(("b1", s, t, value))
        if rnd.random() < 0.3:  # a late reading, still inside the windows
            batch.append(("b1", "temperature", t - rnd.uniform(1, 1000), rnd.uniform(-5, 50)))
        rnd.shuffle(batch)
        cache.ingest(batch)
        stored = {
            f: (v, as_of)
            for f, v, as_of in cache.conn.execute(
                "SELECT feature, value, as_of_ms FROM feature_values"
            )
        }
        for view, feature in (
            ("barn_climate_1h", "temperature_mean_1h"),
            ("barn_climate_1h", "temperature_max_1h"),
            ("barn_consumption_24h", "water_flow_sum_24h"),
        ):
            value, as_of_ms = stored[feature]
            want = cache.window_value(view, feature, "b1", as_of_ms / 1000)
            assert want is not None and value == pytest.approx(want, rel=1e-9, abs=1e-9), feature
