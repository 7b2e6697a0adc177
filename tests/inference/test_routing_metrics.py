"""The latency histograms an operator reads on /metrics and in the router's snapshot: the
buckets hold each observation where its bound says, and the percentiles never report less
than the truth by more than one bucket, however the observations were folded."""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from edge_agent.inference.routing_metrics import _FOLD_AT, BOUNDS_MS, Histogram


def test_buckets_and_percentiles_match_the_exact_values_across_folds() -> None:
    rng = np.random.default_rng(7)
    # tiny models' microseconds, cloud round trips, a few timeouts, and values on the bounds
    values = np.concatenate([
        rng.lognormal(np.log(0.05), 0.5, 6000), rng.lognormal(np.log(20), 0.8, 3000),
        np.array([BOUNDS_MS[0], BOUNDS_MS[40], BOUNDS_MS[-1], 0.0, 90_000.0]),
    ]).tolist()  # fmt: skip
    h = Histogram()
    for i, ms in enumerate(values):
        h.observe(ms)
        if i in (10, 5000):  # read in between: a partial fold, then more observations
            assert h.n == i + 1
    assert len(h.pending) < _FOLD_AT  # what waits to be folded stays bounded

    expected = [0] * (len(BOUNDS_MS) + 1)
    for ms in values:
        expected[bisect_left(BOUNDS_MS, ms)] += 1
    assert h.counts == expected
    assert h.n == len(values)
    assert h.max == max(values)
    assert abs(h.total - sum(values)) < 1e-6 * sum(values)
    for q in (0.5, 0.95, 0.99):
        truth = float(np.quantile(values, q, method="inverted_cdf"))
        got = h.quantile(q)
        assert got is not None
        assert truth <= got <= truth * 1.12 + 1e-9, (q, truth, got)  # at most one bucket up


def test_an_empty_histogram_says_so() -> None:
    h = Histogram()
    assert h.quantile(0.99) is None
    assert h.summary()["count"] == 0 and h.summary()["p99_ms"] is None
