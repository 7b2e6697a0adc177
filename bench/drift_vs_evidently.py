"""Histogram drift path vs Evidently's DataDriftPreset on the same 5k x 10 data, same run.

The histogram path is what the fleet runs: gateway binning (DriftStats.observe) plus the
control plane's vectorised statistics. Evidently runs on the raw rows. Prints both times,
the ratio (target >= 50x) and whether the per-column verdicts match.

    .venv/bin/python bench/drift_vs_evidently.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd

from control_plane.drift.analysis import Groups, RefLayout, analyze
from control_plane.drift.evidently_report import column_verdicts, run_data_drift
from control_plane.drift.thresholds import ThresholdConfig
from edge_agent.telemetry.drift_stats import DriftStats
from farmiq.drift_reference import build_reference

N, F = 5000, 10


def main() -> None:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(F)]
    ref = rng.normal(size=(N, F))
    cur = rng.normal(size=(N, F))
    cur[:, :3] += [0.5, 0.3, 1.0]  # three shifted columns
    cur[:, 3] *= 1.6  # one wider
    reference = build_reference({n: ref[:, i] for i, n in enumerate(names)})
    layout = RefLayout.from_reference(reference)
    th = ThresholdConfig().for_model("bench")

    def ours() -> dict[str, bool]:
        s = DriftStats("bench", reservoir_size=0, clock=lambda: 0.0)
        s.register("m", "1", reference)
        s.observe("m", "1", cur)
        (w,) = s.close_window()
        counts = np.concatenate([np.concatenate([w["features"][n]["counts"] for n in names]), [0]])
        c = len(names)
        g = Groups(
            ["x"],
            counts[None, :],
            np.zeros((1, c)),
            np.zeros((1, c)),
            np.array([[w["features"][n]["min"] for n in names]]),
            np.array([[w["features"][n]["max"] for n in names]]),
            np.array([N]),
            np.array([1]),
        )
        an = analyze(layout, g, th, "device")
        return {n: bool(an.verdict[0, i] == 2) for i, n in enumerate(names)}

    ref_df, cur_df = pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)

    def theirs() -> dict[str, bool]:
        return {k: v["drift"] for k, v in column_verdicts(run_data_drift(ref_df, cur_df)).items()}

    ours(), theirs()  # warm-up (imports, caches)
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        v_ours = ours()
    t_ours = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(3):
        v_theirs = theirs()
    t_theirs = (time.perf_counter() - t) / 3
    print(f"data: {N} rows x {F} columns, reference {N} rows")
    print(f"histogram path (bin on gateway + fleet statistics): {t_ours * 1e3:8.2f} ms")
    print(f"Evidently DataDriftPreset on raw rows:             {t_theirs * 1e3:8.2f} ms")
    print(f"speed-up: {t_theirs / t_ours:.0f}x (target >= 50x)")
    print(f"drifted (ours):      {sorted(k for k, v in v_ours.items() if v)}")
    print(f"drifted (Evidently): {sorted(k for k, v in v_theirs.items() if v)}")
    print(f"verdicts match: {v_ours == v_theirs}")


if __name__ == "__main__":
    main()
