"""The gateway's MQTT dispatch: ``down/<leaf>`` -> one registered handler.

The composition root registers each leaf once (``register(leaf, handler)``); a leaf no
one registered is ignored with a debug line. A handler receives the raw payload (schema
checks live with the handler's wire model, ``farmiq/wire``). A message a handler cannot
use costs one log line and one count in ``malformed``, never an exception out of the
MQTT callback: the daemon keeps running whatever arrives.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from farmiq import topics

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[object]]


class Dispatch:
    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self._handlers: dict[str, Handler] = {}
        self.received: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()

    def register(self, leaf: str, handler: Handler) -> None:
        if leaf in self._handlers:
            raise ValueError(f"down/{leaf} already has a handler")
        self._handlers[leaf] = handler

    def leaves(self) -> list[str]:
        return sorted(self._handlers)

    async def on_message(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_down(topic)
        if parsed is None or parsed[0] != self.device_id:
            return
        leaf = parsed[1]
        handler = self._handlers.get(leaf)
        if handler is None:
            log.debug("ignoring message on %s", topic)
            return
        self.received[leaf] += 1
        try:
            await handler(payload)
        except (ValueError, TypeError, KeyError) as exc:  # includes pydantic ValidationError
            self.malformed[leaf] += 1
            log.warning("malformed message on down/%s dropped: %s", leaf, str(exc)[:200])
        except Exception:
            self.malformed[leaf] += 1
            log.exception("handler of down/%s failed", leaf)
