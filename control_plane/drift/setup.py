"""Wire the drift area into a control-plane process: services, MQTT ingest, acks.

Site configuration (optional) is a JSON file named by ``FARMIQ_DRIFT_CONFIG``::

    {"thresholds": {...see thresholds.py...}, "policy": {...see retraining.py...},
     "hook": {"command": ["python", "train.py"]} | {"webhook": "https://..."},
     "alert_webhook": "https://...",
     "raw_rows_farms": ["farm-a"],  # farms whose gateways may send raw sample rows
     "schedule": {...see control_plane/learning/retraining_schedule.py...},
     "learning": {...see control_plane/learning/setup.py: the hook becomes the learning loop}}
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.drift.ingest import DriftService
from control_plane.drift.retraining import RetrainingDecider, RetrainingPolicy
from control_plane.drift.thresholds import ThresholdConfig
from control_plane.drift.trigger import Alerts, RetrainingTrigger, hook_from_config
from control_plane.learning.retraining_schedule import RetrainingSchedule, ScheduleConfig
from control_plane.learning.setup import learning_hook
from farmiq import topics

log = logging.getLogger(__name__)

CONFIG_ENV = "FARMIQ_DRIFT_CONFIG"


@dataclass
class DriftArea:
    service: DriftService
    decider: RetrainingDecider
    trigger: RetrainingTrigger
    schedule: RetrainingSchedule | None = None  # started by setup(): decisions with no human


def load_config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{CONFIG_ENV}={path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{CONFIG_ENV}={path}: must hold a JSON object")
    return doc


def build_area(ctx: Any, config: dict[str, Any] | None = None) -> DriftArea:
    cfg = load_config() if config is None else config
    service = DriftService(
        ctx.engine,
        ThresholdConfig.from_mapping(cfg.get("thresholds")),
        raw_rows_farms=[str(f) for f in cfg.get("raw_rows_farms") or ()],
    )
    service.create_tables()
    decider = RetrainingDecider(service, RetrainingPolicy.from_mapping(cfg.get("policy")))
    mqtt = getattr(ctx, "mqtt", None)
    alerts = Alerts(
        publish=(lambda t, b: mqtt.publish(t, b, qos=1)) if mqtt is not None else None,
        webhook=cfg.get("alert_webhook"),
    )
    loop = learning_hook(ctx, cfg, alerts)
    trigger = RetrainingTrigger(
        decider,
        ctx.mlflow,
        hook=loop or hook_from_config(cfg.get("hook")),
        alerts=alerts,
        artifact_location=str(Path(ctx.data_dir) / "mlartifacts" / "retraining"),
    )
    sched_cfg = ScheduleConfig.from_mapping(cfg.get("schedule"))
    judged = sorted(
        set(loop.config.models if loop is not None else ()) | set(sched_cfg.retrain_every_s)
    )
    schedule = (
        RetrainingSchedule(trigger, lambda: judged, ctx.engine, sched_cfg)
        if judged and sched_cfg.enabled
        else None
    )
    engine = getattr(ctx, "engine", None)
    if engine is not None:
        from control_plane.security.audit_log import audit

        def audit_trigger(model: str, detail: dict[str, Any]) -> None:
            audit(engine, "system:retraining", "retraining.trigger", model, "", detail)

        trigger.audit = audit_trigger
    return DriftArea(service, decider, trigger, schedule)


def get_area(ctx: Any) -> DriftArea:
    area = ctx.services.get("drift")
    if area is None:
        area = ctx.services["drift"] = build_area(ctx)
    return area  # type: ignore[no-any-return]


def setup(ctx: Any) -> None:
    area = get_area(ctx)

    def reference_on_promote(name: str, version: int) -> None:
        # The reference registered with the version becomes the drift baseline for it, the
        # same statistics its bundle carries to the gateways.
        ref = ctx.registry.reference(name, version)
        if ref is not None:
            area.service.set_reference(name, ref, version=str(version))

    ctx.promotion_hooks.append(reference_on_promote)
    schedule = area.schedule
    if schedule is not None:
        schedule.start()
        log.info("retraining decided with no human for: %s", ", ".join(schedule.models()))
    mqtt = getattr(ctx, "mqtt", None)
    if mqtt is None:
        return

    def on_drift(device_id: str, payload: bytes) -> None:
        res = area.service.ingest_window(device_id, payload)
        if schedule is not None:
            for model in res.models:
                schedule.windows_stored(model)
        if res.ack_keys and topics.is_device_id(device_id):  # else no topic reaches it
            # The application-level ack: the gateway deletes only what we stored.
            mqtt.publish(res.ack_topic, res.ack_payload, qos=1)

    mqtt.on(topics.DRIFT, on_drift)
