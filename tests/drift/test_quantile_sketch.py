"""Drift windows carry KLL quantile sketches instead of raw rows by default: the sketches
answer quantiles within their rank error, merge like the windows do, give the same drift
verdicts as the raw rows (ours and Evidently's), and raw rows reach the database only for
farms that opted in. A corrupt sketch is refused at ingest and never crashes the process."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from control_plane.drift.evidently_report import column_verdicts, run_data_drift
from control_plane.drift.ingest import DriftService, rows_from_sketches
from control_plane.drift.tables import DriftWindow
from edge_agent.telemetry.drift_stats import DriftStats, merge_windows
from farmiq import quantile_sketch
from tests.drift.conftest import FEATURES, WindowFactory, barn, pens, predict, wire

ALL = [*FEATURES, "pen"]


def _ingest(service: DriftService, *windows: dict[str, Any]) -> None:
    for w in windows:
        res = service.ingest_window(w["device_id"], wire(w))
        assert res.stored, res.rejected


def _window(reference: dict[str, Any], device: str, x: np.ndarray, **kw: Any) -> dict[str, Any]:
    stats = DriftStats(device, clock=lambda: 1000.0, **kw)
    stats.register("barn", "1", reference)
    stats.observe("barn", "1", x, predict(x))
    (w,) = stats.close_window(now=1060.0)
    return w


def _rows(n: int, seed: int, shift: dict[str, float] | None = None) -> np.ndarray:
    return np.column_stack([barn(n, seed, shift), pens(n, seed + 1)])


def test_windows_carry_sketches_and_no_rows_by_default(make_window: WindowFactory) -> None:
    w = make_window("gw", n=20_000, seed=3)
    assert "reservoir" not in w  # no row of the barn's data leaves it
    raw = w["_raw"]
    for j, name in enumerate(FEATURES):
        sk = quantile_sketch.decode(w["features"][name]["kll"])
        assert sk.n == 20_000
        for q in (0.01, 0.25, 0.5, 0.75, 0.99):
            true_rank = float((raw[:, j] <= sk.get_quantile(q)).mean())
            assert abs(true_rank - q) < 0.02, (name, q, true_rank)
    assert "kll" not in w["features"]["pen"]  # categorical: its histogram is exact already
    assert quantile_sketch.decode(w["prediction"]["kll"]).n == 20_000
    assert len(wire(w)) < 40_000  # seven sketched columns of 20k rows, a few KB each


def test_merged_windows_sketch_every_row(reference: dict[str, Any]) -> None:
    a_rows, b_rows = _rows(3000, seed=5), _rows(9000, seed=6, shift={"temp_c": 2.0})
    a = _window(reference, "gw", a_rows)
    b = _window(reference, "gw", b_rows)
    b["start"], b["id"] = 2000.0, "gw/barn/1/2000000"
    m = merge_windows(a, b)
    both = np.concatenate([a_rows, b_rows])[:, 0]
    sk = quantile_sketch.decode(m["features"]["temp_c"]["kll"])
    assert sk.n == 12_000
    for q in (0.1, 0.5, 0.9):
        assert abs(float((both <= sk.get_quantile(q)).mean()) - q) < 0.02


@pytest.mark.parametrize("shift", [None, {"temp_c": 0.8, "feed_kg": -0.5, "water_l": 0.6}])
def test_same_verdicts_with_sketches_as_with_raw_rows(
    tmp_path: Any,
    reference: dict[str, Any],
    reference_data: dict[str, np.ndarray],
    shift: dict[str, float] | None,
) -> None:
    from sqlalchemy import create_engine

    x = _rows(3000, seed=31, shift=shift)
    verdicts = []
    for i, size in enumerate((200, 0)):  # yesterday's raw rows, today's sketches
        svc = DriftService(
            create_engine(f"sqlite:///{tmp_path / f'cp{i}.db'}"), raw_rows_farms=["farm"]
        )
        svc.create_tables()
        svc.set_reference("barn", reference)
        w = _window(reference, "gw", x, reservoir_size=size, farm_id="farm")
        _ingest(svc, w)
        an, _ = svc.analyze("barn", level="fleet", since=0, until=5000)
        verdicts.append({f: an.group(0)["features"][f]["verdict"] for f in ALL})
    assert verdicts[0] == verdicts[1]  # the fleet's statistics never read the raw rows

    # Evidently's per-column tests, on the raw rows and on rows rebuilt from the sketches
    ref = pd.DataFrame({f: reference_data[f] for f in ALL})
    on_raw = column_verdicts(run_data_drift(ref, pd.DataFrame(x, columns=ALL), ["pen"]))
    cols, rows = rows_from_sketches(reference, [w], limit=3000)
    assert len(rows) == 3000 and cols[: len(ALL)] == ALL
    rebuilt = pd.DataFrame(rows, columns=cols)[ALL]
    on_sketch = column_verdicts(run_data_drift(ref, rebuilt, ["pen"]))
    assert {c: v["drift"] for c, v in on_sketch.items()} == {
        c: v["drift"] for c, v in on_raw.items()
    }
    drifted = sorted(c for c, v in on_sketch.items() if v["drift"])
    assert drifted == ([] if shift is None else ["feed_kg", "temp_c", "water_l"])


def test_raw_rows_are_stored_only_for_farms_that_opted_in(
    tmp_path: Any, reference: dict[str, Any]
) -> None:
    from sqlalchemy import create_engine

    svc = DriftService(
        create_engine(f"sqlite:///{tmp_path / 'cp.db'}"), raw_rows_farms=["farm-open"]
    )
    svc.create_tables()
    svc.set_reference("barn", reference)
    x = _rows(500, seed=8)
    _ingest(
        svc,
        _window(reference, "gw-open", x, reservoir_size=50, farm_id="farm-open"),
        _window(reference, "gw-closed", x, reservoir_size=50, farm_id="farm-closed"),
    )
    with svc.session() as s:
        stored = {
            d: orjson.loads(p) for d, p in s.execute(DriftWindow.__table__.select().with_only_columns(
                DriftWindow.device_id, DriftWindow.payload))
        }  # fmt: skip
    assert len(stored["gw-open"]["reservoir"]["rows"]) == 50
    assert "reservoir" not in stored["gw-closed"]  # dropped before it was stored
    assert stored["gw-closed"]["features"]["temp_c"]["kll"]  # the statistics stay
    assert svc.raw_rows_dropped == 1
    cols, rows, source = svc.gateway_rows("barn", since=0, until=5000, device_id="gw-open")
    assert source == "raw sample" and len(rows) == 50
    cols, rows, source = svc.gateway_rows("barn", since=0, until=5000, device_id="gw-closed")
    assert source == "sketches" and len(rows) == 500 and len(cols) == len(ALL) + 1


def test_a_corrupt_sketch_is_refused_and_never_crashes(
    service: DriftService, make_window: WindowFactory
) -> None:
    w = make_window("gw-bad", n=5000, seed=9)
    good = base64.b64decode(w["features"]["humidity"]["kll"])
    bad = bytearray(good)
    bad[20] ^= 0x40  # the first level's offset: DataSketches itself would read past the end
    w["features"]["humidity"]["kll"] = base64.b64encode(bytes(bad)).decode()
    res = service.ingest_window("gw-bad", wire(w))
    assert not res.stored and res.ack_keys == [w["id"]]  # acknowledged: never resent
    assert "humidity" in res.rejected[0][1] and "KLL" in res.rejected[0][1]

    # Thousands of corruptions in this process: each is a clear error or a sketch that
    # answers; none takes the process down.
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(5000):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, 48 if rng.random() < 0.7 else len(b)))] = int(
                rng.integers(0, 256)
            )
        if rng.random() < 0.2:
            b = b[: int(rng.integers(0, len(b)))]
        try:
            quantile_sketch.decode(base64.b64encode(bytes(b)).decode()).get_quantiles([0.5])
        except quantile_sketch.SketchError:
            refused += 1
    assert refused > 2500
