"""Dynamic batching for one model, the way Triton's dynamic batcher does it.

Concurrent requests are gathered into one batch until it holds ``max_batch`` rows or the
oldest waiting request has waited ``max_delay_ms``; the batch runs in the model's own
worker thread (ONNX Runtime releases the GIL, so the event loop keeps accepting requests
meanwhile), and each caller gets its own rows of the outputs back. While a batch runs, the
next one fills up; when the worker comes free and requests have already waited, they go
at once. Requests are never split across batches, so a caller's rows stay together.

Only models big enough for batching to pay are batched (the router measures that at
load): for a 10 us model, a thread hop costs more than the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class _Pending:
    __slots__ = ("future", "inputs", "rows", "t0")

    def __init__(
        self, inputs: dict[str, np.ndarray], rows: int, future: asyncio.Future, t0: float
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.t0 = t0


class MicroBatcher:
    def __init__(self, name: str, run: RunFn, *, max_batch: int, max_delay_ms: float) -> None:
        self.name = name
        self._run = run
        self.max_batch = max(1, max_batch)
        self.max_delay_s = max(0.0, max_delay_ms) / 1000.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.batches = 0
        self.rows = 0
        self.in_flight_rows = 0

    @property
    def queue_depth(self) -> int:
        """Rows waiting plus rows running."""
        return self._pending_rows + self.in_flight_rows

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise RuntimeError(f"batcher for {self.name} is closed")
        loop = asyncio.get_running_loop()
        rows = next(iter(inputs.values())).shape[0] if inputs else 1
        fut: asyncio.Future = loop.create_future()
        self._pending.append(_Pending(inputs, rows, fut, time.monotonic()))
        self._pending_rows += rows
        self._maybe_flush(loop)
        return await fut

    def _maybe_flush(self, loop: asyncio.AbstractEventLoop, worker_freed: bool = False) -> None:
        if self._busy or not self._pending:
            return
        waited = time.monotonic() - self._pending[0].t0
        # Requests that queued while the worker ran have had their gathering window: the
        # run itself. Sending them at once keeps the worker busy under load.
        if (
            worker_freed
            or self._pending_rows >= self.max_batch
            or waited >= self.max_delay_s
            or self._closed
        ):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._flush(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_delay_s - waited, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._maybe_flush(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch: list[_Pending] = []
        rows = 0
        while self._pending and (not batch or rows + self._pending[0].rows <= self.max_batch):
            p = self._pending.pop(0)
            batch.append(p)
            rows += p.rows
        self._pending_rows -= rows
        self._busy = True
        self.in_flight_rows = rows
        task = loop.create_task(self._execute(batch, rows))
        task.add_done_callback(lambda _t: None)

    async def _execute(self, batch: list[_Pending], rows: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {k: np.concatenate([p.inputs[k] for p in batch]) for k in batch[0].inputs}
            outs = await loop.run_in_executor(self._executor, self._run, inputs)
            self.batches += 1
            self.rows += rows
            start = 0
            for p in batch:
                if not p.future.done():
                    if len(batch) == 1:
                        p.future.set_result(outs)
                    else:
                        p.future.set_result({k: v[start : start + p.rows] for k, v in outs.items()})
                start += p.rows
        except Exception as exc:  # the whole batch failed: every caller hears why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        finally:
            self._busy = False
            self.in_flight_rows = 0
            self._maybe_flush(loop, worker_freed=True)
            if self._closed and not self._pending and not self._busy:
                self._executor.shutdown(wait=False)

    def close(self) -> None:
        """Stop taking requests; what is queued still runs (a model swap drops nothing)."""
        self._closed = True
        if not self._pending and not self._busy:
            self._executor.shutdown(wait=False)
            return
        try:
            self._maybe_flush(asyncio.get_running_loop())
        except RuntimeError:
            pass

    def stats(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "mean_batch": round(self.rows / self.batches, 2) if self.batches else None,
            "queue_depth": self.queue_depth,
            "max_batch": self.max_batch,
            "max_delay_ms": self.max_delay_s * 1000,
        }
