"""Root rotations reach every gateway by themselves: when a gateway reports an older trust
root than the fleet's (``trust_root_version`` in its retained ``up/state``, or the
``version`` of its ``up/trust`` answer), the control plane sends the next root in turn
on ``down/trust`` (a gateway accepts only version + 1, signed by a threshold of the root it
holds: docs/security.md). A gateway that missed several rotations walks the chain one
answer at a time; one that was offline gets it when its state arrives after reconnecting.

The roots are the fleet's own files (``public/<N>.root.json``, written by every
rotation: ``farmiq signing rotate``); nothing here signs anything. Off without a fleet
directory (a demo's embedded root has no chain).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from control_plane.gateway_reports import ReportedState, json_object, parse
from farmiq import topics

log = logging.getLogger(__name__)

RESEND_S = 60.0  # the same root to the same gateway at most this often (lost answers)


class TrustPush:
    def __init__(self, public_dir: Path, publish: Any) -> None:
        self.public = public_dir
        self.publish = publish  # (topic, payload, qos) -> None
        self._sent: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._cached: tuple[float, int] | None = None

    def current_version(self) -> int | None:
        """The fleet's root version (re-read when root.json changes)."""
        path = self.public / "root.json"
        try:
            mtime = path.stat().st_mtime
            if self._cached is None or self._cached[0] != mtime:
                self._cached = (mtime, int(json.loads(path.read_bytes())["signed"]["version"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self._cached[1]

    def on_state(self, device_id: str, payload: bytes) -> None:
        state = parse(ReportedState, device_id, topics.STATE, payload)
        if state is not None and state.trust_root_version is not None:
            self.offer(device_id, state.trust_root_version)

    def on_trust(self, device_id: str, payload: bytes) -> None:
        doc = json_object(device_id, topics.TRUST, payload)
        held = doc.get("version") if doc else None
        if isinstance(held, int) and not isinstance(held, bool):
            self.offer(device_id, held)

    def offer(self, device_id: str, held: int) -> bool:
        """Send root ``held + 1`` when the fleet has a newer one; True when sent."""
        current = self.current_version()
        if current is None or held >= current:
            return False
        nxt = held + 1
        with self._lock:
            last = self._sent.get(device_id)
            if last is not None and last[0] == nxt and time.time() - last[1] < RESEND_S:
                return False
            self._sent[device_id] = (nxt, time.time())
        try:
            data = (self.public / f"{nxt}.root.json").read_bytes()
        except OSError:
            log.warning("no %s.root.json in %s: gateway %s stays at root %d",
                        nxt, self.public, device_id, held)  # fmt: skip
            return False
        self.publish(topics.down(device_id, topics.TRUST), data, 1)
        log.info("sent root %d to %s (it holds %d, the fleet %d)", nxt, device_id, held, current)
        return True


def setup(ctx: Any) -> None:
    fleet_dir = getattr(ctx.settings, "fleet_dir", None)
    if ctx.mqtt is None or fleet_dir is None:
        return
    from provisioning.fleet import FleetPaths

    bus = ctx.mqtt
    push = TrustPush(FleetPaths(Path(fleet_dir)).public, lambda t, p, q: bus.publish(t, p, qos=q))
    ctx.services["trust_push"] = push
    bus.on(topics.STATE, push.on_state)
    bus.on(topics.TRUST, push.on_trust)
