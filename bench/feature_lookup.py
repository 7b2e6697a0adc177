"""Feature-vector lookup: the gateway's FeatureCache.vector vs Feast get_online_features.

Same 10 features (7 climate over 1 h, 2 flows over 24 h, flock age), same entities, same
data, same run. Prints p50/p99 for both and the ratio (target: gateway >= 10x faster).

    .venv/bin/python bench/feature_lookup.py [--barns 50] [--n 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "features")]
os.environ.setdefault("FEAST_USAGE", "False")

from feature_streams import T0, make_readings  # noqa: E402

from edge_agent.features.feature_cache import FeatureCache  # noqa: E402
from farmiq.features import BARN_SCHEMA, FeatureSchema  # noqa: E402

TEN = FeatureSchema(
    name="barn_numeric",
    major=1,
    features=tuple(r for r in BARN_SCHEMA.features if not r.endswith(":breed")),
    views=BARN_SCHEMA.views,
)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--barns", type=int, default=50)
    ap.add_argument("--n", type=int, default=20000, help="gateway lookups")
    ap.add_argument("--feast-n", type=int, default=2000, help="Feast lookups")
    args = ap.parse_args()
    assert len(TEN.features) == 10

    barns = [f"b{i}" for i in range(args.barns)]
    readings = make_readings(barns, hours=26, seed=1)
    now = readings[-1][2] + 1
    readings += [(b, s, now - 2, 5.0) for b in barns for s in {r[1] for r in readings}]
    flocks = [
        {"flock_id": f"f{b}", "event_ts": now - 600, "flock_age_days": 21, "breed": "ross_308"}
        for b in barns
    ]
    keys = [{"barn_id": b, "flock_id": f"f{b}"} for b in barns]
    print(f"{len(readings)} readings, {len(barns)} barns, vector of {len(TEN.features)} features")

    with tempfile.TemporaryDirectory() as tmp:
        from control_plane.feature_store import FeastFeatureStore

        store = FeastFeatureStore(Path(tmp) / "repo", schemas={TEN.name: TEN})
        store.ingest_readings(readings)
        store.write_cloud_features("flock_profile", flocks)
        store.apply()
        store.materialize(
            start=datetime.fromtimestamp(T0 - 86400, UTC), end=datetime.fromtimestamp(now, UTC)
        )

        cache = FeatureCache(Path(tmp) / "gw.db", schemas={TEN.name: TEN})
        cache.ingest(readings)
        import json

        cache.apply_cloud_features(
            json.dumps(
                {
                    "kind": "farmiq-features/1",
                    "views": {
                        "flock_profile": [
                            {
                                "entity_id": f["flock_id"],
                                "event_ts": f["event_ts"],
                                "values": {"flock_age_days": 21},
                            }
                            for f in flocks
                        ]
                    },
                }
            ).encode()
        )

        # sanity: both sides serve the same numbers
        vec, _ = cache.vector(TEN, keys[0], now=now)
        online = store.online_features(TEN, [keys[0]])
        for i, name in enumerate(TEN.names):
            assert abs(float(vec[i]) - float(online[name][0])) <= 1e-5 * max(1.0, abs(vec[i])), name

        gw_fixed, gw_moving = [], []
        pc = time.perf_counter
        for i in range(args.n):
            k = keys[i % len(keys)]
            t = pc()
            cache.vector(TEN, k, now=now)
            gw_fixed.append(pc() - t)
        for i in range(args.n):  # the clock advances 20 ms per call: windows slide
            k = keys[i % len(keys)]
            t = pc()
            cache.vector(TEN, k, now=now + i * 0.02)
            gw_moving.append(pc() - t)
        fe = []
        refs = list(TEN.features)
        for i in range(args.feast_n):
            k = keys[i % len(keys)]
            t = pc()
            store.store.get_online_features(features=refs, entity_rows=[k]).to_dict()
            fe.append(pc() - t)
        cache.close()

    rows = [
        ("gateway FeatureCache.vector (fixed now)", gw_fixed),
        ("gateway FeatureCache.vector (clock moving)", gw_moving),
        ("Feast get_online_features (sqlite)", fe),
    ]
    print(f"{'':45s} {'p50 us':>10s} {'p99 us':>10s} {'mean us':>10s}")
    for name, xs in rows:
        print(
            f"{name:45s} {pct(xs, 50):10.1f} {pct(xs, 99):10.1f} {statistics.fmean(xs) * 1e6:10.1f}"
        )
    for name, xs in rows[:2]:
        print(
            f"ratio Feast/{name.split('(')[1][:-1]}: p50 {pct(fe, 50) / pct(xs, 50):.0f}x, "
            f"p99 {pct(fe, 99) / pct(xs, 99):.0f}x (target >= 10x)"
        )


if __name__ == "__main__":
    main()
