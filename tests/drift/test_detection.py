"""Fleet statistics on synthetic barns: quiet on the same distribution, loud on known
shifts, and in agreement with scipy and Evidently run on the same raw data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from control_plane.drift.ingest import DriftService
from control_plane.drift.thresholds import ThresholdConfig
from tests.drift.conftest import FEATURES, WindowFactory, wire

ALL = [*FEATURES, "pen"]


def _ingest(service: DriftService, *windows: dict[str, Any]) -> None:
    for w in windows:
        res = service.ingest_window(w["device_id"], wire(w))
        assert res.stored == [w["id"]], res.rejected


def test_same_distribution_flags_nothing(service: DriftService, make_window: WindowFactory) -> None:
    _ingest(service, *[make_window(f"gw{i}", seed=100 + i) for i in range(5)])
    an, meta = service.analyze("barn", level="device", since=0, until=5000)
    assert meta["windows"] == 5
    assert an.labels == [f"gw{i}" for i in range(5)]
    for i in range(5):
        g = an.group(i)
        assert g["drifted_features"] == [], g
        assert g["prediction"]["verdict"] != "drift"


def test_injected_shifts_are_flagged_where_they_happen(
    service: DriftService, make_window: WindowFactory
) -> None:
    _ingest(
        service,
        make_window("calm", seed=10, farm="farm-a"),
        make_window("hot", seed=11, farm="farm-a", shift={"temp_c": 1.0}),
        make_window("wide", seed=12, farm="farm-b", scale={"co2_ppm": 2.0}),
        make_window("pens", seed=13, farm="farm-b", pen_probs=(0.1, 0.2, 0.7)),
    )
    an, _ = service.analyze("barn", level="device", since=0, until=5000)
    by = {an.labels[i]: an.group(i) for i in range(len(an.labels))}
    assert by["calm"]["drifted_features"] == []
    assert by["hot"]["drifted_features"] == ["temp_c"]
    assert by["hot"]["prediction"]["verdict"] == "drift"  # temperature drives the model
    assert by["wide"]["drifted_features"] == ["co2_ppm"]
    assert by["pens"]["drifted_features"] == ["pen"]
    assert by["pens"]["features"]["pen"]["methods"]["chi2"]["status"] == "drift"

    farms, _ = service.analyze("barn", level="farm", since=0, until=5000)
    fb = {farms.labels[i]: farms.group(i) for i in range(len(farms.labels))}
    assert fb["farm-a"]["drifted_features"] == ["temp_c"]
    assert fb["farm-a"]["rows"] == 4000
    assert sorted(fb["farm-b"]["drifted_features"]) == ["co2_ppm", "pen"]


@pytest.mark.parametrize(
    ("shift", "scale"),
    [
        ({}, {}),
        ({"temp_c": 0.3}, {}),
        ({"temp_c": 1.0}, {}),
        ({}, {"temp_c": 1.6}),
        ({"temp_c": -0.6}, {"temp_c": 0.7}),
    ],
)
def test_binned_statistics_agree_with_scipy_on_raw_data(
    service: DriftService,
    make_window: WindowFactory,
    reference_data: dict[str, np.ndarray],
    shift: dict[str, float],
    scale: dict[str, float],
) -> None:
    w = make_window("gw", n=3000, seed=21, shift=shift, scale=scale)
    _ingest(service, w)
    an, _ = service.analyze("barn", level="device", since=0, until=5000)
    j = an.columns.index("temp_c")
    ref, cur = reference_data["temp_c"], w["_raw"][:, 0]
    ks = stats.ks_2samp(ref, cur)
    wd = stats.wasserstein_distance(ref, cur) / ref.std()
    # KS from decile edges is a lower bound and close; Wasserstein within bin resolution.
    assert an.values["ks_statistic"][0, j] == pytest.approx(ks.statistic, abs=0.03)
    assert an.values["ks_statistic"][0, j] <= ks.statistic + 1e-9
    assert an.values["wasserstein"][0, j] == pytest.approx(wd, rel=0.15, abs=0.02)
    assert (an.values["ks"][0, j] < 0.05) == (ks.pvalue < 0.05)
    assert (an.values["wasserstein"][0, j] >= 0.1) == (wd >= 0.1)


def test_verdicts_match_evidently_on_the_same_data(
    service: DriftService,
    make_window: WindowFactory,
    reference_data: dict[str, np.ndarray],
) -> None:
    import pandas as pd

    from control_plane.drift.evidently_report import column_verdicts, run_data_drift

    w = make_window(
        "gw",
        n=3000,
        seed=31,
        shift={"temp_c": 0.8, "feed_kg": -0.5},
        scale={"water_l": 1.8},
        pen_probs=(0.2, 0.3, 0.5),
    )
    _ingest(service, w)
    an, _ = service.analyze("barn", level="device", since=0, until=5000)
    ours = {f: an.group(0)["features"][f]["verdict"] == "drift" for f in ALL}
    ref = pd.DataFrame({f: reference_data[f] for f in ALL})
    cur = pd.DataFrame(w["_raw"], columns=ALL)
    theirs = {c: v["drift"] for c, v in column_verdicts(run_data_drift(ref, cur, ["pen"])).items()}
    assert theirs == ours
    assert sorted(f for f, d in ours.items() if d) == ["feed_kg", "pen", "temp_c", "water_l"]


def test_thresholds_override_per_model_and_feature(
    service: DriftService, make_window: WindowFactory
) -> None:
    _ingest(service, make_window("gw", seed=41, shift={"temp_c": 1.0, "humidity": 1.0}))
    service.thresholds = ThresholdConfig.from_mapping(
        {
            "models": {
                "barn": {
                    "verdict": {"numeric": ["psi"]},
                    "features": {"temp_c": {"psi": {"warn": 5.0, "drift": 10.0}}},
                }
            }
        }
    )
    g = service.analyze("barn", level="device", since=0, until=5000)[0].group(0)
    assert g["drifted_features"] == ["humidity"]
    assert g["features"]["temp_c"]["methods"]["psi"]["status"] == "ok"
    with pytest.raises(ValueError, match="unknown method 'psy'"):
        ThresholdConfig.from_mapping({"methods": {"psy": {"drift": 1}}})


def test_small_windows_are_insufficient_not_drifted(
    service: DriftService, make_window: WindowFactory
) -> None:
    _ingest(service, make_window("tiny", n=40, seed=51, shift={"temp_c": 3.0}))
    g = service.analyze("barn", level="device", since=0, until=5000)[0].group(0)
    assert g["features"]["temp_c"]["verdict"] == "insufficient"
    assert g["drifted_features"] == []
