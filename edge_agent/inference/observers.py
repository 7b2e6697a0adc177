"""The router's one observer channel: drift statistics, shadow mode and rollout health see
every answer, whoever called the router (the HTTP API, the KServe v2 routes, a test).

An observer implements ``answered`` (every answer, cached ones too, called on the request
path just after the answer was computed: it must be cheap and must not raise) and
``failed`` (a request no target could serve). ``TurnBatched`` adapts a per-rows consumer
such as the drift windows: it stacks the rows of one event-loop turn per model version and
hands them over once, after the answers went out.
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

_MAX_PENDING = 256  # answers held at most (one event-loop turn)

Arrays = dict[str, np.ndarray]


class InferenceObserver(Protocol):
    def answered(self, model: LoadedModel, inputs: Arrays, result: InferenceResult) -> None: ...
    def failed(self, name: str) -> None: ...


RowsConsumer = Callable[[LoadedModel, Arrays, Arrays], None]


class TurnBatched:
    """Computed (not cached) answers to ``consumer(model, inputs, outputs)``, stacked per
    model version once per event-loop turn: with 16 clients in flight one call sees ~16
    rows instead of 16 calls seeing one each (the drift windows' per-call numpy overhead
    dominated)."""

    def __init__(self, consumer: RowsConsumer) -> None:
        self.consumer = consumer
        self._pending: list[tuple[LoadedModel, Arrays, Arrays]] = []

    def answered(self, model: LoadedModel, inputs: Arrays, result: InferenceResult) -> None:
        if result.cached:
            return
        pending = self._pending
        if not pending:
            try:
                asyncio.get_running_loop().call_soon(self.drain)
            except RuntimeError:  # no loop (a synchronous caller): hand over at once
                self._pending.append((model, inputs, result.outputs))
                self.drain()
                return
        pending.append((model, inputs, result.outputs))
        if len(pending) >= _MAX_PENDING:  # a caller that never yields: drain now
            self.drain()

    def failed(self, name: str) -> None:
        return None

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        while pending:
            m = pending[0][0]
            same = [p for p in pending if p[0] is m]
            pending = [p for p in pending if p[0] is not m] if len(same) < len(pending) else []
            if len(same) == 1:
                self._call(m, same[0][1], same[0][2])
                continue
            try:
                arrays = {k: np.concatenate([p[1][k] for p in same]) for k in same[0][1]}
                outs = {k: np.concatenate([np.asarray(p[2][k]) for p in same]) for k in same[0][2]}
            except (KeyError, ValueError):  # answers that do not stack: one by one
                for _, a, o in same:
                    self._call(m, a, o)
                continue
            self._call(m, arrays, outs)

    def _call(self, model: LoadedModel, arrays: Arrays, outs: Arrays) -> None:
        try:
            self.consumer(model, arrays, outs)
        except Exception:
            log.exception("inference observer failed")
