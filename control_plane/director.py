"""The control plane's director: every document it sends a gateway that can change what the
gateway runs or does is sealed here (``farmiq.director.envelope``): signed by the director
role's keys, addressed to the device, with an expiry and a per-device counter.

The seal happens in one place, ``MqttBus.publish``, for every topic
``farmiq/v1/gw/{id}/down/<leaf>`` with ``leaf`` in ``SIGNED_LEAVES`` (desired state,
actuator commands, cloud features, outbox acks), so no call site can forget it.

Counter: one row per device in ``director_counters``, advanced by a single atomic
``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` to ``max(last + 1, now in µs)``. Every
replica shares the row, so the counter never goes backwards, even across replicas, a lost
row (time carries it forward) or a clock step back (the row carries it).

Keys: the fleet's ``control-plane/director-<n>.key`` (named in the TUF root's director
role) when ``fleet_dir`` is set, otherwise ``data_dir/keys/director.pem`` listed in the
simple trust root. Anything with ``sign(data) -> {"keyid", "sig"}`` works (a Vault/OpenBao
transit signer behind the ``farmiq.bundle.signing`` interface).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db import Base, Database
from farmiq import topics
from farmiq.director.envelope import SIGNED_LEAVES, SignsBytes, seal

log = logging.getLogger(__name__)


class DirectorCounter(Base):
    __tablename__ = "director_counters"
    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


_NEXT = {
    "sqlite": (
        "INSERT INTO director_counters (device_id, counter) VALUES (:d, :t) "
        "ON CONFLICT (device_id) DO UPDATE SET counter = MAX(director_counters.counter + 1, :t) "
        "RETURNING counter"
    ),
    "postgresql": (
        "INSERT INTO director_counters (device_id, counter) VALUES (:d, :t) "
        "ON CONFLICT (device_id) DO UPDATE "
        "SET counter = GREATEST(director_counters.counter + 1, :t) RETURNING counter"
    ),
}


class Director:
    def __init__(
        self,
        db: Database,
        signers: Sequence[SignsBytes],
        ttl_s: dict[str, float] | None = None,
    ) -> None:
        if not signers:
            raise ValueError("the director needs at least one signing key")
        self.db = db
        self.signers = list(signers)
        self.ttl_s = dict(ttl_s or {})
        dialect = db.engine.dialect.name
        self._sql = sa.text(_NEXT["postgresql" if dialect == "postgresql" else "sqlite"])

    def next_counter(self, device_id: str) -> int:
        now_us = int(time.time() * 1_000_000)
        with self.db.engine.begin() as conn:
            return int(conn.execute(self._sql, {"d": device_id, "t": now_us}).scalar_one())

    def seal(self, device_id: str, leaf: str, body: bytes, ttl_s: float | None = None) -> bytes:
        return seal(
            self.signers,
            leaf=leaf,
            device=device_id,
            counter=self.next_counter(device_id),
            body=body,
            ttl_s=ttl_s if ttl_s is not None else self.ttl_s.get(leaf),
        )

    def wrap(self, topic: str, payload: bytes) -> bytes:
        """The bytes to publish on ``topic``: sealed for a signed down/ leaf, else as is.

        An empty payload (clearing a retained message) is published as is: it carries no
        instruction and an agent ignores it.
        """
        parsed = topics.parse_down(topic)
        if parsed is None or parsed[1] not in SIGNED_LEAVES or not payload:
            return payload
        return self.seal(parsed[0], parsed[1], payload)


class DesiredRefresher:
    """Keeps retained desired states inside their signed lifetime: when a gateway comes
    online (``up/status`` = ``online``) and its desired state was last signed more than
    half its lifetime ago, the same document is published again, sealed afresh (new
    counter, new expiry). A gateway that was offline longer than the lifetime thus gets a
    valid document on reconnect instead of only an expired retained one. Also logs the
    refusals gateways report on ``up/director``."""

    def __init__(self, db: Database, publish: Callable[[str, bytes], None], ttl_s: float) -> None:
        self.db = db
        self.publish = publish
        self.ttl_s = ttl_s
        self._refreshed: dict[str, float] = {}
        self._todo: queue.Queue[str] = queue.Queue(maxsize=10_000)
        self._worker: threading.Thread | None = None

    def on_status(self, device_id: str, payload: bytes) -> None:
        """Ingest handler: only enqueues (the database look-up must not delay the other
        handlers of the fleet's messages); ``check`` runs in the refresher's own thread."""
        if payload.strip() != b"online":
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="desired-refresh", daemon=True)
            self._worker.start()
        with contextlib.suppress(queue.Full):
            self._todo.put_nowait(device_id)

    def _work(self) -> None:
        while True:
            device_id = self._todo.get()
            try:
                self.check(device_id)
            except Exception:
                log.exception("re-signing the desired state of %s failed", device_id)

    def check(self, device_id: str) -> None:
        from control_plane.rollout import desired
        from control_plane.rollout.tables import DesiredState

        now = time.time()
        if now - self._refreshed.get(device_id, 0.0) < self.ttl_s / 2:
            return
        with self.db.session() as s:
            row = s.get(DesiredState, device_id)
            if row is None or now - float(row.updated or 0.0) < self.ttl_s / 2:
                return
            pub = desired.current(s, device_id)
        if pub is not None:
            self._refreshed[device_id] = now
            self.publish(*pub)
            log.info("desired state of %s re-signed for a returning gateway", device_id)

    @staticmethod
    def on_refusal(device_id: str, payload: bytes) -> None:
        log.warning("gateway %s refused a director document: %s", device_id, payload[:512])
