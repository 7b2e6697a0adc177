"""Start-up hook of the features area: one FeastFeatureStore per control-plane process.

Cheap: Feast itself is imported on the first request that needs it, not at start-up.
The online store comes from ``FARMIQ_CP_FEATURE_ONLINE_STORE`` (a sqlite://,
postgresql:// or redis:// URL; default SQLite in the repository), see docs/features.md.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from control_plane.feature_store import FeastFeatureStore, publish_cloud_features
from control_plane.gateway_reports import ReportedState, parse
from farmiq import topics
from farmiq.features.barn import FLOCK_PROFILE

SERVICE = "features"
ONLINE_STORE_ENV = "FARMIQ_CP_FEATURE_ONLINE_STORE"


REPUBLISH_S = 3600.0  # refresh a gateway's cloud features at least hourly while it reports


def setup(ctx: Any) -> None:
    url = getattr(ctx.settings, "feature_online_store", None) or os.environ.get(ONLINE_STORE_ENV)
    store = FeastFeatureStore(ctx.data_dir / "feature_repo", online_store_url=url)
    ctx.services[SERVICE] = store
    if ctx.mqtt is not None:
        ctx.mqtt.on(topics.STATE, _CloudFeaturePush(store, ctx.mqtt))


class _CloudFeaturePush:
    """When a gateway reports the entities it serves (``entities`` in its state), send it
    their cloud-side features (flock age, breed), again when they change or hourly."""

    def __init__(self, store: FeastFeatureStore, bus: Any) -> None:
        self.store = store
        self.bus = bus
        self._sent: dict[str, tuple[str, float]] = {}

    def __call__(self, device_id: str, payload: bytes) -> None:
        state = parse(ReportedState, device_id, topics.STATE, payload)
        entities = state.entities if state is not None else None
        if not isinstance(entities, dict) or not any(entities.values()):
            return
        key = json.dumps(entities, sort_keys=True)
        last = self._sent.get(device_id)
        if last is not None and last[0] == key and time.time() - last[1] < REPUBLISH_S:
            return
        if not self.store.source_path(FLOCK_PROFILE).exists():
            return  # no farm records yet
        publish_cloud_features(self.store, self.bus, device_id, entities)
        self._sent[device_id] = (key, time.time())
