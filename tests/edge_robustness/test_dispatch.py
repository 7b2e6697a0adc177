"""The gateway's MQTT dispatch: every down/<leaf> checked against its farmiq.wire model; a
malformed message costs one log line and one count, never an exception."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from edge_agent.uplink.dispatch import Dispatch
from farmiq import topics
from farmiq.rollout_wire import encode_chunk

DEV = "gw-dispatch-1"


def _dispatch() -> tuple[Dispatch, dict[str, list[bytes]]]:
    d = Dispatch(DEV)
    seen: dict[str, list[bytes]] = {}
    for leaf in (topics.ACTUATOR, topics.DESIRED, topics.CHUNK, topics.OUTBOX_ACK, topics.TRUST):

        async def handler(payload: bytes, leaf: str = leaf) -> None:
            seen.setdefault(leaf, []).append(payload)

        d.register(leaf, handler)
    return d, seen


GOOD = {
    topics.ACTUATOR: orjson.dumps({"command_id": "c1", "actuator": "fan", "value": 0.5}),
    topics.DESIRED: orjson.dumps({"rev": 3, "models": {}}),
    topics.CHUNK: encode_chunk("b-1", 0, 1, b"data"),
    topics.OUTBOX_ACK: orjson.dumps({"keys": ["k1"]}),
    topics.TRUST: b"raw TUF metadata: checked by the trust holder, not here",
}
BAD = {
    topics.ACTUATOR: [b"", b"not json", orjson.dumps({"command_id": "c1", "value": "x"})],
    topics.DESIRED: [b"[" * 5000, orjson.dumps({"rev": "soon"})],
    topics.CHUNK: [b"FQC1", b"garbage"],
    topics.OUTBOX_ACK: [orjson.dumps({"keys": "k1"}), b"\xff\xfe"],
}


def test_good_messages_reach_their_handler_bad_ones_cost_a_line_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d, seen = _dispatch()

    async def go() -> None:
        for leaf, payload in GOOD.items():
            await d.on_message(topics.down(DEV, leaf), payload)
        for leaf, payloads in BAD.items():
            for p in payloads:
                await d.on_message(topics.down(DEV, leaf), p)  # never raises
        await d.on_message(topics.down("someone-else", topics.ACTUATOR), GOOD[topics.ACTUATOR])
        await d.on_message(topics.down(DEV, "no-such-leaf"), b"{}")

    with caplog.at_level(logging.WARNING, logger="edge_agent.uplink.dispatch"):
        asyncio.run(go())
    assert {leaf: len(v) for leaf, v in seen.items()} == {leaf: 1 for leaf in GOOD}
    assert dict(d.malformed) == {leaf: len(v) for leaf, v in BAD.items()}
    lines = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(lines) == sum(len(v) for v in BAD.values())  # one line each


def test_a_leaf_has_one_handler() -> None:
    d, _ = _dispatch()

    async def other(payload: bytes) -> None:
        return None

    with pytest.raises(ValueError, match="already has a handler"):
        d.register(topics.ACTUATOR, other)
