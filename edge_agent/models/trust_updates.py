"""Root rotation on the gateway: ``down/trust`` carries new TUF root metadata.

It is accepted only when the *current* root's threshold signed it (``TrustRoot.rotate``),
then written atomically to ``trust_root`` before it is used, so a reboot keeps it. Bundle
installs and rotations are serialised by the agent's install lock, so no bundle is verified
against a half-applied root. The answer goes to ``up/trust``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from farmiq import topics
from farmiq.bundle.trust import TrustError

if TYPE_CHECKING:
    from edge_agent.agent import Agent

log = logging.getLogger(__name__)


async def handle_trust_update(agent: Agent, payload: bytes) -> dict[str, Any]:
    async with agent.install_lock:
        try:
            # parsing and signature checks are CPU work: off the event loop
            rotated = await asyncio.to_thread(agent.trust.update, payload)
            if rotated is None:
                answer = {"ok": True, "code": "current", "reason": "root already installed"}
            else:
                await asyncio.to_thread(rotated.save, agent.config.trust_root)
                agent.trust = rotated
                agent.installer.trust = rotated
                answer = {"ok": True, "code": "rotated", "reason": "new root installed"}
                log.warning("trust root rotated to version %s", rotated.version)
        except TrustError as exc:
            log.warning("root update refused: %s", exc)
            answer = {"ok": False, "code": "trust", "reason": str(exc)}
        except OSError as exc:  # could not persist: keep the old root in memory too
            log.error("could not save the rotated trust root: %s", exc)
            answer = {"ok": False, "code": "io", "reason": f"cannot save trust root: {exc}"}
    answer.update(version=agent.trust.version, device_id=agent.device_id, ts=time.time())
    await agent.link.publish(topics.up(agent.device_id, topics.TRUST), orjson.dumps(answer))
    return answer
