"""Fleet-scale drift: ingest one window from each of 1,000 gateways x 20 features, then
analyse per device, per farm and fleet-wide. Target: all of it in <= 1 s.

Baseline in the same run: the per-device loop a naive service would do (scipy ks_2samp
and wasserstein_distance on a 200-row raw sample of each device, feature by feature).

    .venv/bin/python bench/fleet_drift.py [--devices 1000] [--features 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from scipy import stats
from sqlalchemy import create_engine

from control_plane.drift.ingest import DriftService
from edge_agent.telemetry.drift_stats import DriftStats, encode_window
from farmiq.drift_reference import build_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--rows", type=int, default=500, help="rows per gateway window")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(a.features)]
    ref = rng.normal(size=(5000, a.features))
    reference = build_reference({n: ref[:, i] for i, n in enumerate(names)})
    payloads, samples = [], []
    for d in range(a.devices):
        x = rng.normal(size=(a.rows, a.features))
        if d % 10 == 0:
            x[:, 0] += 1.0  # every tenth barn drifts on f0
        s = DriftStats(f"gw{d:04d}", farm_id=f"farm{d % 100:03d}", clock=lambda: 100.0)
        s.register("m", "1", reference)
        s.observe("m", "1", x)
        w = s.close_window()[0]
        payloads.append((w["device_id"], encode_window(w)))
        samples.append(x[:200])  # the raw sample a naive service would collect
    size = sum(len(p) for _, p in payloads)
    svc = DriftService(create_engine("sqlite://"))
    svc.create_tables()
    svc.set_reference("m", reference)

    t0 = time.perf_counter()
    svc.ingest_many(payloads)
    t1 = time.perf_counter()
    results = {
        lvl: svc.analyze("m", level=lvl, since=0, until=1e9)[0]
        for lvl in ("device", "farm", "fleet")
    }
    t2 = time.perf_counter()
    dev = results["device"]
    flagged = [dev.labels[i] for i in range(len(dev.labels)) if dev.verdict[i, 0] == 2]

    t3 = time.perf_counter()
    base_flagged = 0
    sub = samples[: max(1, a.devices // 10)]  # a tenth of the fleet, scaled up below
    for smp in sub:  # the per-device, per-feature raw-sample loop
        for j in range(a.features):
            stats.ks_2samp(ref[:, j], smp[:, j])
            wd = stats.wasserstein_distance(ref[:, j], smp[:, j]) / ref[:, j].std()
            base_flagged += int(j == 0 and wd >= 0.1)
    t4 = t3 + (time.perf_counter() - t3) * len(samples) / len(sub)

    print(
        f"{a.devices} gateways x {a.features} features, {a.rows} rows/window, "
        f"{size / 1e6:.1f} MB of windows"
    )
    print(f"ingest (parse + store):              {(t1 - t0) * 1e3:8.1f} ms")
    print(f"analysis (device + farm + fleet):    {(t2 - t1) * 1e3:8.1f} ms")
    print(f"ingest + analysis:                   {(t2 - t0) * 1e3:8.1f} ms (target <= 1000 ms)")
    print(
        f"baseline scipy loop on raw samples:  {(t4 - t3) * 1e3:8.1f} ms, extrapolated "
        f"(analysis only, {(t4 - t3) / (t2 - t1):.0f}x slower than ours)"
    )
    print(
        f"devices flagged on f0: {len(flagged)} (expected {len(range(0, a.devices, 10))}); "
        f"baseline on {len(sub)} devices' 200-row samples: {base_flagged}"
    )
    print(
        f"fleet verdict f0: {results['fleet'].group(0)['features']['f0']['verdict']}, "
        f"farms flagged: {sum(1 for i in range(len(results['farm'].labels)) if results['farm'].verdict[i, 0] == 2)}"
    )


if __name__ == "__main__":
    main()
