"""Shadow mode: a candidate model runs beside the served one on live requests.

``observe(model_name, inputs, served_outputs)`` is called after a request was answered by
the served model. It only enqueues (bounded; drops when full), so the request path pays
next to nothing; a background task runs the candidate on the same inputs and counts how
often it agrees with what was served. Classification agrees on the first output (the
label); regression within ``rtol``. The candidate never serves. Agreement is reported on
``up/shadow`` every ``report_every_s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from edge_agent.inference.validation import InputError, parse_inputs
from edge_agent.models.serving import LoadedModel

log = logging.getLogger(__name__)

Publish = Callable[[bytes], Awaitable[None]]


@dataclass
class _Candidate:
    model: LoadedModel
    rollout: str | None
    rows: int = 0
    agree: int = 0
    errors: int = 0
    dropped: int = 0


class ShadowRunner:
    def __init__(
        self,
        publish: Publish,
        *,
        report_every_s: float = 5.0,
        max_queue: int = 256,
        rtol: float = 0.05,
    ) -> None:
        self.publish = publish
        self.report_every_s = report_every_s
        self.rtol = rtol
        self._cands: dict[str, _Candidate] = {}
        self._queue: asyncio.Queue[tuple[str, Any, dict[str, Any]]] = asyncio.Queue(max_queue)
        self._tasks: list[asyncio.Task[None]] = []

    def set_candidate(self, model: LoadedModel, rollout: str | None) -> None:
        self._cands[model.name] = _Candidate(model, rollout)
        log.info("shadowing %s v%d", model.name, model.version)

    def clear(self, name: str) -> None:
        self._cands.pop(name, None)

    def candidate_bundle(self, name: str) -> str | None:
        c = self._cands.get(name)
        return c.model.manifest.bundle_id if c else None

    def watching(self, model_name: str) -> bool:
        """A candidate shadows this model: its answers are worth ``observe``."""
        return model_name in self._cands

    def observe(self, model_name: str, inputs: Any, served_outputs: dict[str, Any]) -> None:
        """Hook for the request path: cheap, never raises, never blocks."""
        c = self._cands.get(model_name)
        if c is None:
            return
        try:
            self._queue.put_nowait((model_name, inputs, served_outputs))
        except asyncio.QueueFull:
            c.dropped += 1

    def compare(self, name: str, inputs: Any, served: dict[str, Any]) -> None:
        c = self._cands.get(name)
        if c is None:
            return
        m = c.model
        try:
            arrays = parse_inputs(m.manifest, inputs, m.manifest.serving.max_batch)
            outs = m.run(arrays)
            key = m.manifest.outputs[0].name
            cand = np.asarray(outs[key])
            ref = np.asarray(served[key])
            if m.manifest.task == "classification":
                same = cand.reshape(len(cand), -1)[:, 0] == ref.reshape(len(ref), -1)[:, 0]
            else:
                same = (
                    np.isclose(cand, ref, rtol=self.rtol, atol=1e-6)
                    .reshape(len(cand), -1)
                    .all(axis=1)
                )
            c.rows += int(same.size)
            c.agree += int(same.sum())
        except (InputError, KeyError, ValueError, RuntimeError) as exc:
            c.errors += 1
            log.debug("shadow run of %s failed: %s", name, exc)

    def report(self) -> list[dict[str, Any]]:
        return [
            {
                "model": n,
                "candidate_version": c.model.version,
                "bundle_id": c.model.manifest.bundle_id,
                "rollout": c.rollout,
                "rows": c.rows,
                "agree": c.agree,
                "errors": c.errors,
                "dropped": c.dropped,
                "agreement": (c.agree / c.rows) if c.rows else None,
                "ts": time.time(),
            }
            for n, c in self._cands.items()
        ]

    async def final_report(self, name: str) -> None:
        """Publish the agreement of ``name``'s candidate now (before it is cleared)."""
        for rep in self.report():
            if rep["model"] == name:
                try:
                    await self.publish(orjson.dumps(rep))
                except ConnectionError:
                    pass

    async def _work(self) -> None:
        while True:
            name, inputs, served = await self._queue.get()
            self.compare(name, inputs, served)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.report_every_s)
            for rep in self.report():
                try:
                    await self.publish(orjson.dumps(rep))
                except ConnectionError:
                    pass

    def start(self) -> None:
        self._tasks = [
            asyncio.ensure_future(self._work()),
            asyncio.ensure_future(self._report_loop()),
        ]

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
