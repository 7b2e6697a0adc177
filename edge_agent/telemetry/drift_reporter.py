"""Drift reporting on the gateway: window statistics of every served model, label
feedback into concept-drift detectors, and both into the durable outbox.

Glue between the agent and the drift pieces (drift_stats, concept_drift, outbox): it
registers each installed model's reference, observes served requests (a few microseconds
per request, on the request path), and closes windows on a timer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from edge_agent.models.serving import LoadedModel, probability_output
from edge_agent.telemetry.concept_drift import ConceptDriftMonitor
from edge_agent.telemetry.drift_stats import DriftStats, window_item
from edge_agent.telemetry.feedback_upload import (
    FEEDBACK_LEAF,
    ExampleError,
    feedback_batches,
    labelled_examples,
)
from edge_agent.uplink.outbox import Outbox, OutboxFull
from farmiq import topics
from farmiq.cbpe import Calibration

if TYPE_CHECKING:
    from edge_agent.telemetry.drift_checkpoint import DriftCheckpoint

log = logging.getLogger(__name__)


class DriftReporter:
    def __init__(
        self,
        device_id: str,
        outbox: Outbox,
        *,
        farm_id: str | None = None,
        window_s: float = 3600.0,
        reservoir_size: int = 0,
        sketch_k: int = 200,
        checkpoint: DriftCheckpoint | None = None,
        checkpoint_s: float = 60.0,
    ) -> None:
        self.device_id = device_id
        # The open windows go to SQLite every checkpoint_s (drift_checkpoint.py).
        self.checkpoint = checkpoint if checkpoint_s > 0 else None
        self.checkpoint_s = checkpoint_s
        # A checkpoint written (in a thread) while the stop flushes must not bring back
        # windows the flush queued: both hold this lock, and after the flush none is written.
        self._checkpoint_lock = threading.Lock()
        self._flushed = False
        self.outbox = outbox
        self.stats = DriftStats(
            device_id,
            window_s=window_s,
            reservoir_size=reservoir_size,
            sketch_k=sketch_k,
            farm_id=farm_id,
        )
        self.concept = ConceptDriftMonitor()
        self._prob_names: dict[str, str | None] = {}  # bundle id -> its probabilities output
        self.window_s = window_s
        self._topic = topics.up(device_id, topics.DRIFT)

    # -- models ----------------------------------------------------------------------------
    def register(self, model: LoadedModel) -> bool:
        """Start windows for a model whose bundle carries reference statistics."""
        m = model.manifest
        if not m.reference:
            return False
        try:
            ref = orjson.loads((model.path / m.reference).read_bytes())
            schema = m.feature_schema.version if m.feature_schema else ""
            calibration = self._calibration(model)
            if calibration is not None:
                self._prob_names[m.bundle_id] = probability_output(m)
            self.stats.register(
                m.name, str(m.version), ref, schema_version=schema, calibration=calibration
            )
            return True
        except (OSError, ValueError) as exc:
            log.warning("no drift statistics for %s v%s: %s", m.name, m.version, exc)
            return False

    @staticmethod
    def _calibration(model: LoadedModel) -> Calibration | None:
        """The bundle's calibration for the label-free estimate, if it ships one."""
        m = model.manifest
        if not m.calibration or m.task != "classification":
            return None
        try:
            return Calibration.from_dict(orjson.loads((model.path / m.calibration).read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("no expected-accuracy estimate for %s v%s: %s", m.name, m.version, exc)
            return None

    def unregister(self, name: str, version: int) -> None:
        self._queue(self.stats.unregister(name, str(version)))

    def observe(
        self, model: LoadedModel, inputs: dict[str, np.ndarray], outputs: dict[str, Any]
    ) -> None:
        """Called after each local answer. Never raises into the request path."""
        try:
            x = next(iter(inputs.values()))
            if x.ndim != 2:
                return
            pred = probs = None
            if model.manifest.task == "classification" and "label" in outputs:
                pred = np.asarray(outputs["label"])
                probs = outputs.get(self._prob_names.get(model.manifest.bundle_id) or "")
            elif outputs:
                pred = np.asarray(next(iter(outputs.values())))
            self.stats.observe(model.name, str(model.version), x, pred, probabilities=probs)
        except Exception as exc:  # statistics must never break inference
            log.debug("drift observe skipped: %s", exc)

    # -- feedback --------------------------------------------------------------------------
    def feedback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Blocking (the route runs it in a thread): concept-drift detectors, and items
        with ``inputs`` queued as labelled examples on ``up/feedback`` (feedback_upload)."""
        try:
            model, examples = labelled_examples(orjson.loads(body))
        except ExampleError as exc:
            return 400, {"error": str(exc)}
        except ValueError:  # not JSON: handle_request says why
            model, examples = None, []
        status, doc = self.concept.handle_request(body)
        for change in doc.get("changes", []) if status == 200 else []:
            key = (
                f"{self.device_id}/concept/{change['model']}/{change['detector']}/"
                f"{change['n_seen']}/{round(change['at'] * 1000)}"
            )
            payload = orjson.dumps({**change, "device_id": self.device_id, "key": key})
            try:
                self.outbox.put(self._topic, payload, key)
            except OutboxFull:
                log.error("outbox full: concept-drift change %s not queued", key)
        if status == 200 and model is not None and examples:
            topic = topics.up(self.device_id, FEEDBACK_LEAF)
            try:
                for key, payload in feedback_batches(self.device_id, model, examples):
                    self.outbox.put(topic, payload, key)
            except OutboxFull as exc:
                log.error("outbox full: labelled examples of %s not queued: %s", model, exc)
                return 503, {**doc, "error": f"labelled examples not queued: {exc}"}
            doc["examples_queued"] = len(examples)
        return status, doc

    # -- windows ---------------------------------------------------------------------------
    def _queue(self, windows: list[dict[str, Any]]) -> None:
        for w in windows:
            try:
                payload, key, group = window_item(w)
                self.outbox.put(self._topic, payload, key, merge_group=group)
            except OutboxFull:
                log.error("outbox full: drift window of %s dropped", w.get("model"))

    def flush(self) -> None:
        """Close every running window now (shutdown) and queue them."""
        with self._checkpoint_lock:
            self._flushed = True
            self._queue(self.stats.close_window())
            if self.checkpoint is not None:
                self.checkpoint.clear()  # queued: the next start must not queue them again

    def restore(self) -> int:
        """Blocking (start-up, before ``run``): queue the windows the last checkpoint
        holds (the agent did not stop gracefully) as closed partial windows; returns how
        many. They keep their window ids: the outbox ignores an id it already holds."""
        if self.checkpoint is None:
            return 0
        windows = [w for w in self.checkpoint.load() if w.get("device_id") == self.device_id]
        self._queue(windows)
        self.checkpoint.clear()
        if windows:
            log.info(
                "drift: %d open window(s) restored from the checkpoint and queued", len(windows)
            )
        return len(windows)

    def save_checkpoint(self) -> None:
        """Blocking: write the open windows (off the loop: SQLite commits are fsyncs)."""
        with self._checkpoint_lock:
            if self.checkpoint is not None and not self._flushed:
                self.checkpoint.save(self.stats.snapshot())

    async def run(self) -> None:
        """Queue windows as they end, checkpoint the open ones. Wakes a few times per
        window (and per checkpoint interval), never busy-loops."""
        interval = max(0.5, min(60.0, self.window_s / 4))
        if self.checkpoint is not None:
            interval = min(interval, max(0.5, self.checkpoint_s))
        next_checkpoint = time.monotonic() + self.checkpoint_s
        while True:
            await asyncio.sleep(interval)
            windows = self.stats.collect()
            if windows:  # outbox commits are fsyncs: off the event loop
                await asyncio.to_thread(self._queue, windows)
            if self.checkpoint is not None and (windows or time.monotonic() >= next_checkpoint):
                # After a window closed too: the checkpoint must not keep a queued window.
                next_checkpoint = time.monotonic() + self.checkpoint_s
                try:
                    await asyncio.to_thread(self.save_checkpoint)
                except Exception as exc:  # a full disk must not stop the windows
                    log.warning("drift checkpoint failed: %s", exc)
