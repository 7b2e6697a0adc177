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

import logging
import time
from collections.abc import Sequence

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
