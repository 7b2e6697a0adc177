"""The router's one observer channel: drift statistics, shadow mode and rollout health see
every answer, whoever called the router (the HTTP API, the KServe v2 routes, a test).

The router hands each answer to ``ObserverChannel.answered`` (one list append on the
request path). The channel gives the observers what accumulated in batches, per model
version, a few milliseconds later (``DELAY_S``, or at once when ``MAX_PENDING`` wait): the
observers' per-call numpy work then costs once per batch instead of once per request
(measured under wrk, 16 clients: per event-loop turn it still cost about 18% of the agent's
CPU; in batches of up to 64 answers it is a few percent: 64 rather than 256 kept the
agent's p99 near the bare endpoint's, as one hand-over holds the loop for less).
``drain`` hands over at once: the router's ``flush``, before anyone reads what the
observers hold (graceful stop).

An observer implements ``answered(batch)`` (an ``AnsweredBatch`` of one model version; it
must not raise, the channel logs it if it does) and ``failed(name)`` (a request no target
could serve; called at once). ``RowsObserver`` adapts a per-rows consumer such as the
drift windows to the stacked rows of a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from edge_agent.inference.result import InferenceResult
from edge_agent.models.serving import LoadedModel

log = logging.getLogger(__name__)

DELAY_S = 0.02  # answers wait at most this long for their observers
MAX_PENDING = 64  # ... or until this many wait (bench/inference_http.py: p99 1.9 ms, 2.9 at 256)

Arrays = dict[str, np.ndarray]


class AnsweredBatch:
    """Answers of one model version, in order. ``stacked()``: the computed (not cached)
    answers' inputs and outputs stacked row-wise, computed once for all observers."""

    __slots__ = ("_stacked", "answers", "model")

    def __init__(self, model: LoadedModel, answers: list[tuple[Arrays, InferenceResult]]) -> None:
        self.model = model
        self.answers = answers
        self._stacked: tuple[Arrays, Arrays] | bool | None = False  # False: not computed

    def stacked(self) -> tuple[Arrays, Arrays] | None:
        """(inputs, outputs) of the computed answers stacked; None when there is none or
        they do not stack (then use ``answers``)."""
        if self._stacked is False:
            self._stacked = self._stack()
        return self._stacked  # type: ignore[return-value]

    def _stack(self) -> tuple[Arrays, Arrays] | None:
        got = [(a, r.outputs) for a, r in self.answers if not r.cached]
        if not got:
            return None
        if len(got) == 1:
            return got[0][0], {k: np.asarray(v) for k, v in got[0][1].items()}
        first_in, first_out = got[0]
        try:
            ins = {k: np.concatenate([a[k] for a, _ in got]) for k in first_in}
            outs = {k: np.concatenate([np.asarray(o[k]) for _, o in got]) for k in first_out}
        except (KeyError, ValueError):  # answers that do not stack
            return None
        return ins, outs


class InferenceObserver(Protocol):
    def answered(self, batch: AnsweredBatch) -> None: ...
    def failed(self, name: str) -> None: ...


class ObserverChannel:
    """What the router calls; observers get the answers in batches (see the module)."""

    def __init__(self, delay_s: float = DELAY_S, max_pending: int = MAX_PENDING) -> None:
        self.observers: list[InferenceObserver] = []
        self.delay_s = delay_s
        self.max_pending = max_pending
        self._pending: list[tuple[LoadedModel, Arrays, InferenceResult]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, observer: InferenceObserver) -> None:
        self.observers.append(observer)

    def answered(self, model: LoadedModel, inputs: Arrays, result: InferenceResult) -> None:
        if not self.observers:
            return
        pending = self._pending
        pending.append((model, inputs, result))
        if len(pending) >= self.max_pending:
            self.drain()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a synchronous caller: hand over at once
                self.drain()
                return
            self._timer = loop.call_later(self.delay_s, self.drain)

    def failed(self, name: str) -> None:
        for obs in self.observers:
            try:
                obs.failed(name)
            except Exception:
                log.exception("inference observer failed")

    def drain(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        while pending:
            m = pending[0][0]
            same = [(a, r) for mm, a, r in pending if mm is m]
            pending = [p for p in pending if p[0] is not m] if len(same) < len(pending) else []
            batch = AnsweredBatch(m, same)
            for obs in self.observers:
                try:
                    obs.answered(batch)
                except Exception:
                    log.exception("inference observer failed")


RowsConsumer = Callable[[LoadedModel, Arrays, Arrays], None]


class RowsObserver:
    """Computed (not cached) answers to ``consumer(model, inputs, outputs)``, stacked per
    batch (one call per batch; answers that do not stack, one call each)."""

    def __init__(self, consumer: RowsConsumer) -> None:
        self.consumer = consumer

    def answered(self, batch: AnsweredBatch) -> None:
        stacked = batch.stacked()
        if stacked is not None:
            self._call(batch.model, *stacked)
            return
        for arrays, result in batch.answers:
            if not result.cached:
                self._call(batch.model, arrays, result.outputs)

    def failed(self, name: str) -> None:
        return None

    def _call(self, model: LoadedModel, arrays: Arrays, outs: Arrays) -> None:
        try:
            self.consumer(model, arrays, outs)
        except Exception:
            log.exception("inference observer failed")
