"""The gateway's MQTT dispatch: ``down/<leaf>`` -> (schema, handler).

The composition root (edge_agent/agent.py) registers each leaf once with
``register(leaf, handler, schema)``, the schema being the leaf's model in
``farmiq.wire`` (``LEAVES``: None for raw bytes). A message is checked against it before
the handler sees it; a leaf no one registered is ignored with a debug line. A message that
does not fit the schema, or that its handler refuses, costs one log line and one count in
``malformed[leaf]``, never an exception out of the MQTT callback: the daemon keeps
running whatever arrives.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from farmiq import topics
from farmiq.wire import LEAVES

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[object]]
# (leaf, payload) -> the payload to check and handle, or None when it is refused (the
# director gate: signed leaves are opened and verified before anything else looks at them).
Opener = Callable[[str, bytes], Awaitable[bytes | None]]


class Dispatch:
    def __init__(self, device_id: str, opener: Opener | None = None) -> None:
        self.device_id = device_id
        self._opener = opener
        self._handlers: dict[str, tuple[Callable[[bytes], Any] | None, Handler]] = {}
        self.received: Counter[str] = Counter()
        self.malformed: Counter[str] = Counter()

    def register(self, leaf: str, handler: Handler, schema: Any = "wire") -> None:
        """``schema``: a pydantic model (or a class with ``decode(bytes)``), None for raw
        bytes; by default the leaf's model in ``farmiq.wire.LEAVES``."""
        if leaf in self._handlers:
            raise ValueError(f"down/{leaf} already has a handler")
        if schema == "wire":
            entry = LEAVES.get(("down", leaf))
            schema = entry.model if entry is not None else None
        check: Callable[[bytes], Any] | None = None
        if schema is not None:
            check = getattr(schema, "decode", None) or schema.model_validate_json
        self._handlers[leaf] = (check, handler)

    def leaves(self) -> list[str]:
        return sorted(self._handlers)

    async def on_message(self, topic: str, payload: bytes) -> None:
        parsed = topics.parse_down(topic)
        if parsed is None or parsed[0] != self.device_id:
            return
        leaf = parsed[1]
        entry = self._handlers.get(leaf)
        if entry is None:
            log.debug("ignoring message on %s", topic)
            return
        check, handler = entry
        self.received[leaf] += 1
        try:
            if self._opener is not None:
                opened = await self._opener(leaf, payload)
                if opened is None:  # refused (and reported) by the opener
                    return
                payload = opened
            if check is not None:
                check(payload)  # farmiq.wire schema: refused here, before any work
            await handler(payload)
        except (ValueError, TypeError, KeyError) as exc:  # includes pydantic ValidationError
            self.malformed[leaf] += 1
            log.warning("malformed message on down/%s dropped: %s", leaf, str(exc)[:200])
        except Exception:
            self.malformed[leaf] += 1
            log.exception("handler of down/%s failed", leaf)
