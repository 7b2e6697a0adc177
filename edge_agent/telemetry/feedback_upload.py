"""Labelled feedback as training examples for the cloud: ``up/feedback`` batches.

An item of ``POST /api/v1/feedback`` that carries the model's ``inputs`` (the feature
vector it was asked about) besides ``prediction`` and ``truth`` is a labelled example; so
is one that carries the ``entity`` it was asked about (an entity-keyed model: the control
plane reads the features from its Feast offline store at the item's ``ts``). The
agent queues them, in batches of at most ``BATCH`` examples, in the durable outbox on
``up/feedback``, in the control plane's format (control_plane/learning/setup.py)::

    {"type": "feedback_batch", "key": "<outbox key>", "model": "m", "device_id": "gw",
     "examples": [{"ts": 1790000000.0, "inputs": [24.1, 61.0], "truth": "low"}]}

The control plane stores each example once and acknowledges the key on ``down/ack``; until
then the outbox re-sends it, across restarts (resumable). The key hashes the batch, so
the same request posted twice is queued once. Bounded: at most 10,000 items a request
(the feedback route's limit), and the outbox's disk budget.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import orjson

FEEDBACK_LEAF = "feedback"  # up/feedback (control_plane.learning.setup.FEEDBACK)
BATCH = 500  # examples per message (the control plane takes up to 10,000)
MAX_FEATURES = 4096


class ExampleError(ValueError):
    """An item's ``inputs`` or ``ts`` cannot be a training example."""


def labelled_examples(
    doc: Any, now: float | None = None
) -> tuple[str | None, list[dict[str, Any]]]:
    """(model, examples) of a feedback body; examples only from items with ``inputs``.

    Raises ``ExampleError`` on an item whose inputs are not a list of finite numbers, so
    the whole request is refused before anything is counted."""
    if not isinstance(doc, dict):
        return None, []
    model = doc.get("model")
    items = doc.get("items")
    if items is None:
        items = [doc]
    if not isinstance(items, list) or not isinstance(model, str):
        return None, []
    t = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    for i, it in enumerate(items):
        if isinstance(it, dict) and it.get("inputs") is None and it.get("entity") is not None:
            out.append(_entity_example(i, it, t))
            continue
        if not isinstance(it, dict) or it.get("inputs") is None:
            continue
        raw = it["inputs"]
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_FEATURES:
            raise ExampleError(f"item {i}: 'inputs' must be a list of 1..{MAX_FEATURES} numbers")
        try:
            inputs = [float(x) for x in raw if not isinstance(x, bool)]
            ts = float(it.get("ts", t))
        except (TypeError, ValueError):
            raise ExampleError(f"item {i}: 'inputs' and 'ts' must be numbers") from None
        if len(inputs) != len(raw) or not all(map(math.isfinite, inputs)) or not math.isfinite(ts):
            raise ExampleError(f"item {i}: 'inputs' and 'ts' must be finite numbers")
        truth = it.get("truth")
        if isinstance(truth, dict | list) or truth is None:
            raise ExampleError(f"item {i}: 'truth' must be a label or a number")
        out.append({"ts": ts, "inputs": inputs, "truth": str(truth)})
    return model, out


def _entity_example(i: int, it: dict[str, Any], t: float) -> dict[str, Any]:
    ent = it["entity"]
    if (
        not isinstance(ent, dict)
        or not 0 < len(ent) <= 8
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in ent.items())
    ):
        raise ExampleError(f"item {i}: 'entity' must map join keys to ids (strings)")
    try:
        ts = float(it.get("ts", t))
    except (TypeError, ValueError):
        raise ExampleError(f"item {i}: 'ts' must be a number") from None
    truth = it.get("truth")
    if isinstance(truth, dict | list) or truth is None or not math.isfinite(ts):
        raise ExampleError(f"item {i}: 'truth' must be a label or a number, 'ts' finite")
    return {"ts": ts, "entity": dict(ent), "truth": str(truth)}


def feedback_batches(
    device_id: str, model: str, examples: list[dict[str, Any]], batch: int = BATCH
) -> list[tuple[str, bytes]]:
    """(outbox key, payload) per batch of at most ``batch`` examples."""
    out = []
    for i in range(0, len(examples), batch):
        part = examples[i : i + batch]
        digest = hashlib.sha256(orjson.dumps([model, part])).hexdigest()[:32]
        key = f"{device_id}/feedback/{model}/{digest}"
        doc = {
            "type": "feedback_batch",
            "key": key,
            "model": model,
            "device_id": device_id,
            "examples": part,
        }
        out.append((key, orjson.dumps(doc)))
    return out
