"""Gateway ingest with windowed aggregates kept current, vs persisting raw rows alone.

Baseline in the same run: the same rows through one ``executemany`` per batch into an
identical readings table (WAL, same synchronous mode) with no aggregation, no dedup and no
write-through of aggregates. Target: >= 20,000 readings/s with aggregates.

    .venv/bin/python bench/feature_ingest.py [--n 200000] [--batch 1000]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.features.feature_cache import FeatureCache  # noqa: E402

SENSORS = ("temperature", "humidity", "co2", "ammonia", "water_flow", "feed_flow")


def readings(n: int, barns: int) -> list[tuple[str, str, float, float]]:
    rnd = random.Random(1)
    t0 = 1_700_000_000.0
    # every barn/sensor reports about once every 2 s of simulated time
    step = 2.0 / (barns * len(SENSORS))
    return [
        (f"b{i % barns}", SENSORS[(i // barns) % len(SENSORS)], t0 + i * step, rnd.uniform(0, 40))
        for i in range(n)
    ]


def baseline(path: Path, rows: list[tuple[str, str, float, float]], batch: int, sync: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE readings (entity_id TEXT NOT NULL, sensor TEXT NOT NULL,"
        " ts_ms INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (entity_id, sensor, ts_ms))"
    )
    conn.execute("CREATE INDEX ix_ts ON readings (ts_ms)")
    t = time.perf_counter()
    for k in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT OR IGNORE INTO readings VALUES (?,?,?,?)",
            [(e, s, round(ts * 1000), v) for e, s, ts, v in rows[k : k + batch]],
        )
        conn.execute("COMMIT")
    el = time.perf_counter() - t
    conn.close()
    return len(rows) / el


def cache_rate(
    path: Path, rows: list[tuple[str, str, float, float]], batch: int, sync: str
) -> float:
    c = FeatureCache(path, synchronous=sync)
    t = time.perf_counter()
    for k in range(0, len(rows), batch):
        c.ingest(rows[k : k + batch])
    el = time.perf_counter() - t
    assert c.integrity_check() == "ok"
    c.close()
    return len(rows) / el


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--barns", type=int, default=20)
    args = ap.parse_args()
    rows = readings(args.n, args.barns)
    print(f"{args.n} readings, {args.barns} barns x {len(SENSORS)} sensors (26 h of windows kept)")
    print(
        f"{'batch':>6s} {'sync':>7s} {'FeatureCache/s':>15s} {'raw insert/s':>13s}"
        f" {'cost':>6s} {'vs 20k/s':>9s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for batch, sync in ((1000, "NORMAL"), (1000, "FULL"), (100, "NORMAL"), (100, "FULL")):
            d = Path(tmp) / f"{batch}-{sync}"
            d.mkdir()
            base = baseline(d / "raw.db", rows, batch, sync)
            rate = cache_rate(d / "cache.db", rows, batch, sync)
            print(
                f"{batch:6d} {sync:>7s} {rate:15,.0f} {base:13,.0f}"
                f" {base / rate:5.2f}x {rate / 20000:8.1f}x"
            )


if __name__ == "__main__":
    main()
