"""The narrow view of the MQTT link that the agent's parts get (never the link itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from farmiq import topics


class LinkState(Protocol):
    """Is the broker reachable, and how often did the link drop."""

    connected: asyncio.Event
    reconnects: int


class Link(LinkState, Protocol):
    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None: ...


# Publish ``payload`` on the gateway's own ``up/<leaf>`` topic.
PublishUp = Callable[..., Awaitable[None]]


def up_publisher(link: Link, device_id: str) -> PublishUp:
    async def publish_up(leaf: str, payload: bytes, retain: bool = False) -> None:
        await link.publish(topics.up(device_id, leaf), payload, retain=retain)

    return publish_up
