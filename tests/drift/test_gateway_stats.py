"""Gateway-side windows: exact histograms, honest quality counts, bounded samples, light
imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from edge_agent.telemetry.drift_stats import DriftStats, merge_windows
from tests.drift.conftest import FEATURES, barn, pens, predict


def _x(n: int, seed: int) -> np.ndarray:
    x = np.column_stack([barn(n, seed), pens(n, seed + 1)])
    return x


def test_histograms_equal_numpy_histogram_and_bad_values_are_counted(
    reference: dict[str, Any],
) -> None:
    x = _x(3000, 5)
    x[:7, 0] = np.nan
    x[7:10, 0] = np.inf
    x[10, 0] = 1e9  # far above the reference: the upper tail bin
    s = DriftStats("gw", clock=lambda: 0.0)
    s.register("barn", "1", reference)
    for i in range(0, 3000, 37):  # mixed batch sizes, incl. staged single rows
        s.observe("barn", "1", x[i : i + 37], predict(x[i : i + 37]))
    for i in range(5):
        s.observe("barn", "1", x[i], predict(x[i : i + 1]))
    (w,) = s.close_window()
    allx = np.concatenate([x, x[:5]])
    assert w["n"] == 3005
    t = w["features"]["temp_c"]
    assert (t["missing"], t["invalid"]) == (7 + 5, 3)  # rows 0-4 went in twice
    col = allx[:, 0][np.isfinite(allx[:, 0])]
    edges = np.asarray(reference["features"]["temp_c"]["edges"])
    inner, _ = np.histogram(col, bins=edges)
    below, above = int((col < edges[0]).sum()), int((col > edges[-1]).sum())
    assert t["counts"] == [below, *inner.tolist(), above]
    assert t["max"] == 1e9 and above >= 1
    pen = w["features"]["pen"]
    assert pen["counts"][:3] == [int((allx[:, 6] == k).sum()) for k in range(3)]
    assert pen["counts"][3] == 0  # "other"
    # the "model" propagates the bad temperatures into its predictions
    assert sum(w["prediction"]["counts"]) == 3005 - 15
    assert (w["prediction"]["missing"], w["prediction"]["invalid"]) == (12, 3)


def test_reservoir_is_bounded_and_uniform(reference: dict[str, Any]) -> None:
    s = DriftStats("gw", reservoir_size=100, clock=lambda: 0.0)
    s.register("barn", "1", reference)
    x = _x(20000, 6)
    x[:, 0] = np.arange(20000)  # the row number, to see which rows were kept
    for i in range(0, 20000, 50):
        s.observe("barn", "1", x[i : i + 50], predict(x[i : i + 50]))
    (w,) = s.close_window()
    kept = np.array([r[0] for r in w["reservoir"]["rows"]])
    assert len(kept) == 100 and len(set(kept)) == 100
    assert w["reservoir"]["seen"] == 20000
    # Uniform over the stream: neither the first nor the last rows dominate.
    assert 6000 < kept.mean() < 14000
    assert (kept < 10000).sum() == pytest.approx(50, abs=17)


def test_windows_roll_by_time_with_deterministic_ids(reference: dict[str, Any]) -> None:
    now = [3600.0 * 10 + 5]
    s = DriftStats("gw-7", window_s=3600, clock=lambda: now[0])
    s.register("barn", "3", reference)
    s.observe("barn", "3", _x(10, 1), predict(_x(10, 1)))
    assert s.collect() == []
    now[0] += 3600  # next hour
    s.observe("barn", "3", _x(10, 2), predict(_x(10, 2)))
    (w,) = s.collect()
    assert w["id"] == "gw-7/barn/3/36005000"
    assert (w["start"], w["end"], w["n"]) == (36005.0, 39600.0, 10)
    assert w["schema"] and w["version"] == "3"
    assert s.observe("other", "1", _x(3, 1)) is False  # unregistered: ignored, not fatal
    with pytest.raises(ValueError, match=r"inputs must be \[n, 7\]"):
        s.observe("barn", "3", np.zeros((2, 3)))


def test_merge_sums_counts_and_keeps_reservoir_bounded(reference: dict[str, Any]) -> None:
    def window(start: float, seed: int) -> dict[str, Any]:
        s = DriftStats("gw", reservoir_size=50, clock=lambda: start)
        s.register("barn", "1", reference)
        x = _x(400, seed)
        s.observe("barn", "1", x, predict(x))
        return s.close_window()[0]

    a, b = window(0.0, 1), window(3600.0, 2)
    m = merge_windows(a, b)
    assert m["n"] == 800 and (m["start"], m["end"]) == (0.0, b["end"])
    for f in FEATURES:
        assert m["features"][f]["counts"] == [
            p + q
            for p, q in zip(a["features"][f]["counts"], b["features"][f]["counts"], strict=True)
        ]
    assert len(m["reservoir"]["rows"]) == 50 and m["reservoir"]["seen"] == 800
    assert m["id"] == merge_windows(b, a)["id"]  # deterministic: redelivery stays idempotent
    assert set(m["parts"]) == {a["id"], b["id"]}


def test_edge_modules_stay_light() -> None:
    code = (
        "import sys\n"
        "import edge_agent.telemetry.drift_stats, edge_agent.uplink.outbox, edge_agent.telemetry.concept_drift\n"
        "import farmiq.drift_reference\n"
        "from edge_agent.telemetry.concept_drift import ConceptDriftMonitor\n"
        "m = ConceptDriftMonitor()\n"
        "for i in range(100): m.feedback('m', i % 3, 0); m.feedback('r', 1.0, 2.0, 'regression')\n"
        "heavy = {'scipy', 'pandas', 'sklearn', 'mlflow', 'evidently', 'feast', 'sqlalchemy'}\n"
        "print(sorted(heavy & {k.split('.')[0] for k in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
