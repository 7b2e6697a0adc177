"""Root rotation on the gateway: ``down/trust`` carries new TUF root metadata.

It is accepted only when the *current* root's threshold signed it (``TrustRoot.rotate``),
then written atomically before it is used, so a reboot keeps it. The one trust holder
(``TrustHolder``) is changed only through ``InstallService.rotate_trust``, under the
install lock, so no bundle is verified against a half-applied root. The answer goes to
``up/trust``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from edge_agent.models.install_service import InstallService
from edge_agent.uplink.port import PublishUp
from farmiq import topics


async def handle_trust_update(
    installs: InstallService, publish_up: PublishUp, device_id: str, payload: bytes
) -> dict[str, Any]:
    answer = await installs.rotate_trust(payload)
    answer.update(device_id=device_id, ts=time.time())
    await publish_up(topics.TRUST, orjson.dumps(answer))
    return answer
