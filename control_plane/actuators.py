"""Actuator commands for gateways' MCUs: send, and record what the MCU did.

A command gets an id here; the gateway passes it to the MCU as the idempotency id, so a
command redelivered by MQTT (or re-sent by an operator with the same id) never runs twice.
Results come back through the gateway's durable outbox on ``up/actuator_result``; they
are stored by command id and acknowledged on ``down/ack`` so the gateway can forget them.

Bookkeeping rules: a command id is unique in the control plane (re-sending it for the same
device and the same action is the idempotent retry; for anything else it is a
:class:`CommandIdConflict`, a 409); a late or repeated result never downgrades a command
that already succeeded (the MCU ran it; a later "MCU unplugged" is about the retry, not the
command); a result naming a command this control plane does not know for that device is
kept in ``actuator_unmatched_results`` and listed by ``unmatched()``, never dropped.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import JSON, Float, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from control_plane.db import Base, Database
from control_plane.gateway_reports import ActuatorResult, json_object
from farmiq import topics

if TYPE_CHECKING:
    from control_plane.context import ControlPlaneContext
    from control_plane.mqtt_bus import MqttBus

log = logging.getLogger(__name__)


class ActuatorCommand(Base):
    __tablename__ = "actuator_commands"
    command_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    mcu: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actuator: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="sent")  # sent|ok|failed
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    updated: Mapped[float] = mapped_column(Float, default=time.time)


class UnmatchedActuatorResult(Base):
    """A result for a command id the control plane did not send to that device."""

    __tablename__ = "actuator_unmatched_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    command_id: Mapped[str] = mapped_column(String(64), index=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    received: Mapped[float] = mapped_column(Float, default=time.time)


class CommandIdConflict(ValueError):
    """The command id is already used for another device or another action."""


class ActuatorService:
    def __init__(self, db: Database, bus: MqttBus | None) -> None:
        self.db = db
        self.bus = bus
        if bus is not None:
            bus.on(topics.ACTUATOR_RESULT, self.on_result)

    def send(
        self, device_id: str, actuator: str, value: float, *, mcu: str | None = None,
        command_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        if self.bus is None:
            raise RuntimeError("no broker connection: MQTT is disabled in the settings")
        topics.check_device_id(device_id)
        if not 0.0 <= value <= 1.0:
            raise ValueError("actuator values are 0..1 (fraction of full power or opening)")
        command_id = command_id or uuid.uuid4().hex
        with self.db.session() as s:
            row = s.get(ActuatorCommand, command_id)
            if row is not None and (row.device_id, row.mcu, row.actuator, row.value) != (
                device_id, mcu, actuator, value,
            ):  # fmt: skip
                raise CommandIdConflict(
                    f"command id {command_id!r} is already used for {row.actuator}="
                    f"{row.value} on {row.device_id}; use a new id"
                )
            if row is None:
                s.add(
                    ActuatorCommand(
                        command_id=command_id,
                        device_id=device_id,
                        mcu=mcu,
                        actuator=actuator,
                        value=value,
                    )
                )
        body = {"command_id": command_id, "actuator": actuator, "value": value, "mcu": mcu}
        self.bus.publish(topics.down(device_id, topics.ACTUATOR), orjson.dumps(body), qos=1)
        return self.get(command_id)

    def get(self, command_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(ActuatorCommand, command_id)
            if row is None:
                raise KeyError(command_id)
            return {
                "command_id": row.command_id, "device_id": row.device_id, "mcu": row.mcu,
                "actuator": row.actuator, "value": row.value, "status": row.status,
                "result": row.result, "created": row.created, "updated": row.updated,
            }  # fmt: skip

    def unmatched(self, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Results for commands this control plane never sent to that device, newest first."""
        with self.db.session() as s:
            q = select(UnmatchedActuatorResult).order_by(UnmatchedActuatorResult.id.desc())
            if device_id is not None:
                q = q.where(UnmatchedActuatorResult.device_id == device_id)
            rows = s.scalars(q.limit(max(1, min(limit, 1000)))).all()
            return [
                {"device_id": r.device_id, "command_id": r.command_id, "result": r.result,
                 "received": r.received}
                for r in rows
            ]  # fmt: skip

    def on_result(self, device_id: str, payload: bytes) -> None:
        doc = json_object(device_id, topics.ACTUATOR_RESULT, payload)
        if doc is None:
            return
        key = doc.get("key") if isinstance(doc.get("key"), str) else None
        try:
            res = ActuatorResult.model_validate(doc)
        except ValueError as exc:
            # Never storable: acknowledged all the same, or the outbox resends it forever.
            log.warning("actuator result from %s is malformed (%s); dropped", device_id, exc)
            res = None
        if res is not None:
            with self.db.session() as s:
                row = s.get(ActuatorCommand, res.command_id)
                if row is not None and row.device_id == device_id:
                    if row.status == "ok" and not res.ok:
                        # The MCU ran it; a later failure is a retry's (e.g. the MCU was
                        # unplugged when it was re-sent), not the command's.
                        log.info(
                            "late failed result for %r kept out of an ok command", row.command_id
                        )
                    else:
                        row.status = "ok" if res.ok else "failed"
                        row.result = doc
                        row.updated = time.time()
                else:
                    log.warning(
                        "result for unknown command %r from %s kept as unmatched",
                        res.command_id, device_id,
                    )  # fmt: skip
                    s.add(
                        UnmatchedActuatorResult(
                            device_id=device_id, command_id=res.command_id, result=doc
                        )
                    )
        if key and self.bus is not None:  # stored (or unknowable): the gateway may forget it
            self.bus.publish(
                topics.down(device_id, topics.OUTBOX_ACK), orjson.dumps({"keys": [key]})
            )


def setup(ctx: ControlPlaneContext) -> None:
    ctx.services["actuators"] = ActuatorService(ctx.db, ctx.mqtt)
