"""The router's observer channel: every answer reaches every observer, in batches per model
version, within the delay or at the cap, and at once on ``Router.flush``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest

from edge_agent.inference.observers import AnsweredBatch, ObserverChannel, RowsObserver
from edge_agent.inference.result import InferenceResult


class _Model:
    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version


def _answer(i: int, cached: bool = False, width: int = 3) -> tuple[dict, InferenceResult]:
    x = {"X": np.full((1, 4), float(i), dtype=np.float32)}
    out = {"label": np.array([i % 3]), "probabilities": np.full((1, width), 0.5, np.float32)}
    return x, InferenceResult("m", 1, "edge", "r", 0.1 * i, out, cached=cached)


class Recorder:
    def __init__(self) -> None:
        self.batches: list[AnsweredBatch] = []
        self.failures: list[str] = []

    def answered(self, batch: AnsweredBatch) -> None:
        self.batches.append(batch)

    def failed(self, name: str) -> None:
        self.failures.append(name)


def test_answers_reach_observers_batched_per_model_after_the_delay() -> None:
    async def main() -> tuple[Recorder, int]:
        ch = ObserverChannel(delay_s=0.05)
        rec = Recorder()
        ch.add(rec)
        v1, v2 = _Model("m", 1), _Model("m", 2)
        for i in range(10):
            ch.answered(v1 if i % 2 else v2, *_answer(i))
        seen_at_once = len(rec.batches)
        await asyncio.sleep(0.15)
        return rec, seen_at_once

    rec, at_once = asyncio.run(main())
    assert at_once == 0  # nothing on the request path itself
    assert [(b.model.version, len(b.answers)) for b in rec.batches] == [(2, 5), (1, 5)]
    # each batch keeps its answers in order
    assert [r.latency_ms for _, r in rec.batches[1].answers] == pytest.approx(
        [0.1, 0.3, 0.5, 0.7, 0.9]
    )


def test_cap_and_flush_hand_over_at_once_and_failures_are_immediate() -> None:
    async def main() -> Recorder:
        ch = ObserverChannel(delay_s=60.0, max_pending=4)
        rec = Recorder()
        ch.add(rec)
        m = _Model("m", 1)
        for i in range(6):
            ch.answered(m, *_answer(i))
        assert [len(b.answers) for b in rec.batches] == [4]  # the cap
        ch.failed("m")
        assert rec.failures == ["m"]
        ch.drain()  # Router.flush
        assert [len(b.answers) for b in rec.batches] == [4, 2]
        return rec

    asyncio.run(main())


def test_rows_observer_stacks_computed_answers_and_a_failing_observer_costs_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[tuple[Any, Any]] = []

    def consumer(model: Any, inputs: dict, outputs: dict) -> None:
        got.append((inputs["X"].copy(), {k: np.asarray(v).copy() for k, v in outputs.items()}))

    class Broken:
        def answered(self, batch: AnsweredBatch) -> None:
            raise RuntimeError("observer bug")

        def failed(self, name: str) -> None:
            raise RuntimeError("observer bug")

    ch = ObserverChannel()
    ch.add(Broken())  # type: ignore[arg-type]
    ch.add(RowsObserver(consumer))
    m = _Model("m", 1)
    with caplog.at_level(logging.ERROR):
        ch.answered(m, *_answer(1))  # no running loop: handed over at once
        ch.failed("m")
    assert len(got) == 1 and got[0][0].shape == (1, 4)
    got.clear()

    async def main() -> None:
        for i in range(5):
            ch.answered(m, *_answer(i, cached=(i == 2)))
        ch.answered(m, *_answer(9, width=5))  # does not stack with the others
        ch.drain()

    asyncio.run(main())
    assert any("inference observer failed" in r.getMessage() for r in caplog.records)
    # The cached answer is not seen again; the odd one forces one call per answer.
    rows = np.concatenate([x for x, _ in got])
    assert sorted(rows[:, 0].tolist()) == [0.0, 1.0, 3.0, 4.0, 9.0]


def test_stacked_batch_is_one_call_with_every_row() -> None:
    calls: list[int] = []
    obs = RowsObserver(lambda m, x, o: calls.append(x["X"].shape[0]))
    batch = AnsweredBatch(_Model("m", 1), [_answer(i) for i in range(7)])  # type: ignore[arg-type]
    obs.answered(batch)
    assert calls == [7]
    stacked = batch.stacked()
    assert stacked is not None and stacked[1]["probabilities"].shape == (7, 3)
