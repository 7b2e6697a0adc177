"""Cloud side of chunked transfers: answer ``up/transfer`` requests with ``down/chunk``.

Gateways pull: each request names the chunks the gateway still wants, which also tells us
what it already holds (the application-level acknowledgement; PUBACKs prove nothing, see
NOTES.md). Chunks go out at QoS 0: a lost one is simply asked for again, and nothing is
queued on the broker for a gateway that went away. A device may fetch only bundles its
desired state names. Bundles are cached in memory (a few, least recently used first out).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from control_plane.bundles import BundleService
from control_plane.db import Database
from control_plane.mqtt_bus import MqttBus
from control_plane.rollout.desired import bundles_of
from control_plane.rollout.tables import DesiredState
from farmiq import topics
from farmiq.rollout_wire import DEFAULT_CHUNK_SIZE, DesiredModel, desired_for_bundle, encode_chunk

log = logging.getLogger(__name__)


class TransferServer:
    def __init__(
        self,
        db: Database,
        bundles: BundleService,
        bus: MqttBus | None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        cache_bundles: int = 8,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> None:
        self.is_revoked = is_revoked or (lambda _device_id: False)
        self.db = db
        self.bundles = bundles
        self.bus = bus
        self.chunk_size = chunk_size
        self._cache: OrderedDict[str, tuple[bytes, DesiredModel]] = OrderedDict()
        self._cache_max = cache_bundles
        self._allowed: dict[str, set[str]] = {}  # device -> bundle ids its desired state names
        self._lock = threading.Lock()
        self.bytes_sent: dict[str, int] = {}
        self.chunks_sent = 0

    # -- bundles -------------------------------------------------------------------------
    def _get(self, bundle_id: str) -> tuple[bytes, DesiredModel] | None:
        with self._lock:
            hit = self._cache.get(bundle_id)
            if hit is not None:
                self._cache.move_to_end(bundle_id)
                return hit
        loaded = self.bundles.load(bundle_id)
        if loaded is None:
            return None
        rec, data = loaded
        return self.add(bundle_id, rec.version, data)

    def add(self, bundle_id: str, version: int, data: bytes) -> tuple[bytes, DesiredModel]:
        """Cache a bundle and its chunk spec. Called directly for one just built in a
        transaction not committed yet (its row is not visible to ``bundles.load`` from
        another connection until then)."""
        spec = desired_for_bundle(
            data, version=version, bundle_id=bundle_id, chunk_size=self.chunk_size
        )
        with self._lock:
            self._cache[bundle_id] = (data, spec)
            while len(self._cache) > self._cache_max:
                self._cache.popitem(last=False)
        return data, spec

    def spec(self, bundle_id: str, **fields: Any) -> DesiredModel:
        got = self._get(bundle_id)
        if got is None:
            raise KeyError(f"no bundle {bundle_id}")
        return got[1].model_copy(update=fields)

    def allow(self, device_id: str, doc: dict[str, Any]) -> None:
        """Remember what a device may fetch (called when its desired state is written)."""
        self._allowed[device_id] = bundles_of(doc)

    def _may_fetch(self, device_id: str, bundle_id: str) -> bool:
        if bundle_id in self._allowed.get(device_id, set()):
            return True
        with self.db.session() as s:  # written by another replica, or before a restart
            row = s.get(DesiredState, device_id)
            self._allowed[device_id] = bundles_of(row.doc) if row is not None else set()
        return bundle_id in self._allowed[device_id]

    # -- requests (MQTT worker thread) ---------------------------------------------------
    def on_request(self, device_id: str, payload: bytes) -> dict[str, Any] | None:
        try:
            req = orjson.loads(payload)
            bundle_id = str(req["bundle_id"])
            wanted = [int(i) for i in req.get("chunks") or []]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("bad transfer request from %s", device_id)
            return None
        if not wanted:
            return req  # progress only (complete, budget-exhausted)
        if self.is_revoked(device_id):  # its certificate is dead; nor does it get bytes
            log.warning("revoked device %s asked for bundle %s; refused", device_id, bundle_id)
            return None
        if self.bus is None or not self._may_fetch(device_id, bundle_id):
            log.warning(
                "device %s asked for bundle %s it is not meant to have", device_id, bundle_id
            )
            return None
        got = self._get(bundle_id)
        if got is None:
            return None
        data, spec = got
        n = len(spec.chunks)
        topic = topics.down(device_id, topics.CHUNK)
        sent = 0
        for i in wanted[:64]:
            if 0 <= i < n:
                blob = data[i * spec.chunk_size : (i + 1) * spec.chunk_size]
                msg = encode_chunk(bundle_id, i, n, blob)
                self.bus.publish(topic, msg, qos=0)
                sent += len(msg)
        self.chunks_sent += len(wanted)
        self.bytes_sent[device_id] = self.bytes_sent.get(device_id, 0) + sent
        return None
