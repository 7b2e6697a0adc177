"""Writing a device's desired state: one row per device, one retained MQTT message.

The row is the truth; the retained message is its copy on the broker. Callers commit the
row first and publish afterwards, so a crash in between leaves a row that the scheduler
publishes again (the message is idempotent: same rev, same content)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from control_plane.rollout.tables import DesiredState
from farmiq import topics
from farmiq.rollout_wire import DesiredDoc, DesiredModel

Publish = tuple[str, bytes]


def _doc(row: DesiredState) -> DesiredDoc:
    return DesiredDoc.model_validate(row.doc or {})


def set_model(
    s: Session, device_id: str, model: str, entry: DesiredModel, *, lock: bool
) -> Publish:
    row = s.get(DesiredState, device_id, with_for_update=lock)
    if row is None:
        row = DesiredState(device_id=device_id, doc={}, rev=0)
        s.add(row)
    doc = _doc(row)
    old = doc.models.get(model)
    blocked = sorted(set(entry.blocked) | set(old.blocked if old else []))
    if entry.version is not None:
        blocked = [v for v in blocked if v != entry.version]  # an explicit re-install unblocks
    doc.models[model] = entry.model_copy(update={"blocked": blocked})
    row.rev = (row.rev or 0) + 1
    doc.rev, doc.issued = row.rev, time.time()
    row.doc = doc.model_dump(mode="json")
    row.updated = doc.issued
    return topics.down(device_id, topics.DESIRED), doc.to_bytes()


def unblock(s: Session, device_id: str, model: str, version: int, *, lock: bool) -> Publish | None:
    row = s.get(DesiredState, device_id, with_for_update=lock)
    if row is None:
        return None
    doc = _doc(row)
    cur = doc.models.get(model)
    if cur is None or version not in cur.blocked:
        return None
    doc.models[model] = cur.model_copy(update={"blocked": [v for v in cur.blocked if v != version]})
    row.rev += 1
    doc.rev, doc.issued = row.rev, time.time()
    row.doc = doc.model_dump(mode="json")
    return topics.down(device_id, topics.DESIRED), doc.to_bytes()


def current(s: Session, device_id: str) -> Publish | None:
    row = s.get(DesiredState, device_id)
    if row is None:
        return None
    return topics.down(device_id, topics.DESIRED), DesiredDoc.model_validate(row.doc).to_bytes()


def bundles_of(doc: dict[str, Any]) -> set[str]:
    return {m.get("bundle_id") for m in (doc.get("models") or {}).values() if m.get("bundle_id")}
