"""Wire the learning loop into a control plane: the ``learning`` section of the drift
configuration (``FARMIQ_DRIFT_CONFIG``) turns the retraining trigger's hook into the
loop, and gateways' labelled feedback arrives on ``up/feedback``.

Config::

    {"learning": {"models": {"barn-ventilation": {
        "entrypoint": "control_plane.learning.entrypoint:standardized_logistic",
        "params": {"C": 1.0}, "lookback_s": 86400, "holdout_fraction": 0.3,
        "min_rows": 300, "promotion": {"margin": 0.02, "min_holdout": 200,
                                       "approval": false},
        "auto_rollout": true, "rollout_waves": [10, 50, 100], "rollout_soak_s": 300,
        "shadow_percent": 10, "shadow_min_feedback": 200}}}}

With ``auto_rollout`` a winner is rolled out by itself (control_plane/learning/rollouts.py);
with ``shadow_percent`` too, it first runs as a shadow on that share of the gateways and
production moves only when it beats the champion there on labelled feedback by ``margin``.

Feedback message (``farmiq/v1/gw/<device>/up/feedback``, QoS 1, from the outbox)::

    {"type": "feedback_batch", "key": "<outbox key>", "model": "barn-ventilation",
     "examples": [{"ts": 1790000000.0, "inputs": [24.1, 61.0, 12.0, 1.7], "truth": "low"}]}

or, for a model served by entity, ``{"ts": ..., "entity": {"barn_id": "b1", "flock_id":
"f3"}, "truth": "low"}``: its features are read from the Feast offline store at ``ts``.

The control plane acknowledges the key on ``down/ack`` once the batch is stored (or
refused as malformed), so the gateway deletes it from its outbox.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson

from control_plane.learning.examples import ExampleError, ExampleStore
from control_plane.learning.hard_examples import HARD_EXAMPLES, HardExampleStore
from control_plane.learning.loop import LearningConfig, LearningLoop
from farmiq import topics

log = logging.getLogger(__name__)

FEEDBACK = "feedback"  # up/feedback: labelled examples for retraining
LEARNING = "learning"  # ctx.services key of the LearningLoop
HARD = "hard_examples"  # ctx.services key of the HardExampleStore


def learning_hook(ctx: Any, cfg: dict[str, Any], alerts: Any) -> LearningLoop | None:
    """The loop as the retraining hook when the config has a ``learning`` section."""
    doc = cfg.get("learning")
    if not doc:
        return None
    examples = ExampleStore(ctx.engine)
    examples.create_tables()
    loop = LearningLoop(
        ctx.registry,
        examples,
        LearningConfig.from_mapping(doc),
        alerts=alerts,
        on_promote=getattr(ctx, "promoted", None),
        artifact_location=str(Path(ctx.data_dir) / "mlartifacts" / "training"),
        audit_engine=ctx.engine,
        rollouts=lambda: ctx.services.get("rollouts"),
        features=lambda: ctx.services.get("features"),  # control_plane/features_setup.py
    )
    # The rollout area (set up after us) wires loop.staged into its scheduler: the
    # labelled-feedback gate of shadow waves and the promotion when one passes.
    ctx.services[LEARNING] = loop
    hard = ctx.services[HARD] = HardExampleStore(examples)
    ctx.promotion_hooks.append(loop.staged.on_promoted)  # an operator's approval
    mqtt = getattr(ctx, "mqtt", None)
    if mqtt is not None:
        mqtt.on(FEEDBACK, outbox_handler(examples.ingest, "labelled examples", mqtt))
        mqtt.on(HARD_EXAMPLES, outbox_handler(hard.ingest, "hard examples", mqtt))
    return loop


def outbox_handler(ingest: Any, what: str, mqtt: Any) -> Any:
    """An ``up/<leaf>`` handler for a gateway's outbox batches: store, then acknowledge
    the key (a malformed batch too, so the gateway never re-sends what cannot be kept)."""

    def on_batch(device_id: str, payload: bytes) -> None:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("%s from %s: not JSON; dropped", what, device_id)
            return
        key = doc.get("key") if isinstance(doc, dict) else None
        try:
            n = ingest(device_id, doc)
            log.info("stored %d %s from %s", n, what, device_id)
        except ExampleError as exc:
            log.warning("%s from %s refused: %s", what, device_id, exc)
        if isinstance(key, str) and topics.is_device_id(device_id):
            mqtt.publish(
                topics.down(device_id, topics.OUTBOX_ACK), orjson.dumps({"keys": [key]}), qos=1
            )

    return on_batch
