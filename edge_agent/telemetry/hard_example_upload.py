"""The hard examples a gateway kept, uploaded for labelling: ``up/hard_examples`` batches.

When the confidence cascade wanted a second opinion and the cloud could not be asked, the
input was kept on disk (edge_agent/inference/escalation_store.py). Every ``interval_s``
this uploader moves the oldest kept entries, ``batch`` at a time, into the durable outbox
in the control plane's format (control_plane/learning/hard_examples.py)::

    {"type": "hard_examples", "key": "<outbox key>", "device_id": "gw", "model": "m",
     "examples": [{"id": "<entry id>#<row>", "ts": 1790000000.0, "version": 3,
                   "inputs": [24.1, 61.0], "confidence": 0.41, "reason": "..."}]}

An entry leaves the store only once the outbox holds it (SQLite, synchronous): from then on
the outbox re-sends it until the control plane acknowledges the key, across restarts. The
outbox's disk budget bounds the whole; when it is full the entries stay where they are and
the next round tries again. Only single-input models' rows go (the vector a label is
about); an entry of another shape stays for the local API (``GET /api/v1/escalations``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from typing import Any

import orjson

from edge_agent.inference.escalation_store import EscalationStore
from edge_agent.uplink.outbox import Outbox, OutboxFull
from farmiq import topics

log = logging.getLogger(__name__)

HARD_LEAF = "hard_examples"  # up/hard_examples (control_plane.learning.hard_examples)


class HardExampleUploader:
    def __init__(
        self,
        store: EscalationStore,
        outbox: Outbox,
        device_id: str,
        *,
        interval_s: float = 60.0,
        batch: int = 200,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.device_id = device_id
        self.interval_s = interval_s
        self.batch = batch
        self.uploaded = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.upload_once)
            except Exception:  # a bad entry never stops the uploads
                log.exception("hard-example upload failed")

    def upload_once(self) -> int:
        """Queue up to ``batch`` kept entries; returns how many left the store."""
        entries = self.store.entries(limit=self.batch)
        by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
        ids_of: dict[str, list[str]] = defaultdict(list)
        for e in entries:
            rows = _examples(e)
            if rows:
                by_model[str(e["model"])] += rows
                ids_of[str(e["model"])].append(str(e["id"]))
        topic = topics.up(self.device_id, HARD_LEAF)
        moved = 0
        for model, examples in by_model.items():
            ids = ids_of[model]
            key = f"{self.device_id}/hard/{hashlib.sha256('|'.join(ids).encode()).hexdigest()[:32]}"
            doc = {"type": "hard_examples", "key": key, "device_id": self.device_id,
                   "model": model, "examples": examples}  # fmt: skip
            try:
                self.outbox.put(topic, orjson.dumps(doc), key)
            except OutboxFull:
                log.warning("outbox full: %d hard examples of %s stay on disk", len(ids), model)
                break
            for i in ids:
                self.store.remove(i)
            moved += len(ids)
        self.uploaded += moved
        return moved


def _examples(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One example per kept row (none for an entry that is not one flat vector a row)."""
    inputs = entry.get("inputs") or {}
    if len(inputs) != 1:
        return []
    rows = next(iter(inputs.values()))
    if rows and not isinstance(rows[0], list):
        rows = [rows]
    if not rows or not all(
        isinstance(r, list) and r and all(isinstance(v, int | float) for v in r) for r in rows
    ):
        return []
    conf = list(entry.get("confidence") or [])
    return [
        {
            "id": f"{entry['id']}#{i}",
            "ts": float(entry.get("ts", 0.0)),
            "version": entry.get("version"),
            "inputs": [float(v) for v in row],
            "confidence": conf[i] if i < len(conf) else None,
            "reason": str(entry.get("reason", ""))[:200],
        }
        for i, row in enumerate(rows)
    ]
