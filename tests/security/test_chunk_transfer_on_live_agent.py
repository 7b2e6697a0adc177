"""Chunked transfers under attack and loss, on a real agent over the real broker (the
in-process cases in test_chunk_transfer_hardening.py time the receiver finely; these show
the same defences where a gateway meets them). The test plays the control plane: it signs
desired states with the fleet's director keys and answers the agent's ``up/transfer``
requests with ``down/chunk`` messages.

* a signed desired state that lists the hash of an 8 KiB chunk for a 1 KiB slot (a
  compromised control plane): the chunk is refused before it is written and the slot is
  asked for again with growing gaps, not in a tight loop;
* a newer desired state supersedes that transfer: the new one completes (the receiver is
  not wedged), and a request window lost on the way is asked again after
  ``chunk_timeout_s``;
* through all of it the gateway serves v2, then installs v3.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Iterator

import orjson
import pytest

from farmiq import topics
from farmiq.bundle.builder import read_container
from farmiq.bundle.signing import Signer
from farmiq.rollout_wire import DesiredModel, desired_for_bundle, encode_chunk
from provisioning.fleet import FleetPaths
from tests.security.helpers import fleet_signers, regression_bundle
from tests.security.test_director_on_live_agent import (
    NAME,
    Gateway,
    director,
    fleet,
    live_gateway,
)

__all__ = ["director", "fleet"]  # module fixtures shared with the director's live test

CHUNK = 1024
TIMEOUT_S = 0.4  # the agent's rollout.chunk_timeout_s here


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    mqtt_port: int,
    fleet: FleetPaths,
    director: list[Signer],
) -> Iterator[Gateway]:
    gw = live_gateway(
        tmp_path_factory.mktemp("gw-chunks"), mqtt_port, fleet, director, (2,),
        rollout={"chunk_timeout_s": TIMEOUT_S, "chunk_window": 4},
    )  # fmt: skip
    yield gw
    gw.listener.close()
    gw.agent.stop()


def _keys(fleet: FleetPaths) -> list[Signer]:
    return fleet_signers(fleet)[:2]


def _bundle_id(bundle: bytes) -> str:
    return str(json.loads(read_container(bundle)[0])["bundle_id"])


class ChunkServer:
    """Answers the gateway's chunk requests (polled from the listener) with ``chunk(i)``."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.topic = topics.up(gw.id, topics.TRANSFER)
        self.seen = len(gw.listener.on(self.topic))
        self.requests: list[tuple[float, str, list[int]]] = []

    def serve(self, bundle_id: str, total: int, chunk: object, seconds: float,
              drop_first: bool = False, until: object = None) -> None:  # fmt: skip
        deadline = time.monotonic() + seconds
        dropped = not drop_first
        while time.monotonic() < deadline:
            if until is not None and until():  # type: ignore[operator]
                return
            got = self.gw.listener.on(self.topic)
            for raw in got[self.seen :]:
                req = orjson.loads(raw)
                if req.get("bundle_id") != bundle_id or not req.get("chunks"):
                    continue
                self.requests.append((time.monotonic(), bundle_id, list(req["chunks"])))
                if not dropped:  # this window is lost on the way
                    dropped = True
                    continue
                for i in req["chunks"]:
                    self.gw.listener.publish(
                        topics.down(self.gw.id, topics.CHUNK),
                        encode_chunk(bundle_id, i, total, chunk(i)),  # type: ignore[operator]
                    )
            self.seen = len(got)
            time.sleep(0.01)

    def asks(self, bundle_id: str, index: int) -> list[float]:
        return [t for t, b, idx in self.requests if b == bundle_id and index in idx]


def _desired(gw: Gateway, rev: int, spec: DesiredModel) -> bytes:
    body = {"rev": rev, "issued": time.time(), "models": {NAME: spec.model_dump(mode="json")}}
    return gw.signed(topics.DESIRED, body)


def test_chunk_attacks_and_losses_on_a_live_gateway(gateway: Gateway, fleet: FleetPaths) -> None:
    gw = gateway
    server = ChunkServer(gw)

    # 1. A signed desired state listing the hash of an oversized chunk for slot 0.
    bundle = regression_bundle(_keys(fleet), 3)
    bid = _bundle_id(bundle)
    spec = desired_for_bundle(bundle, version=3, bundle_id=bid, chunk_size=CHUNK)
    big = b"x" * (8 * CHUNK)
    forged = spec.model_copy(update={"chunks": [hashlib.sha256(big).hexdigest(), *spec.chunks[1:]]})
    n = len(spec.chunks)
    gw.listener.publish(topics.down(gw.id, topics.DESIRED), _desired(gw, 1, forged))

    def forged_chunk(i: int) -> bytes:
        return big if i == 0 else bundle[i * CHUNK : (i + 1) * CHUNK]

    server.serve(bid, n, forged_chunk, seconds=4.0)
    stored = gw.agent.state_dir / "transfers" / bid / "data"
    assert stored.exists() and stored.stat().st_size <= len(bundle), "the 8 KiB chunk was written"
    assert b"x" * 100 not in stored.read_bytes()
    asks = server.asks(bid, 0)
    # refused each time, asked again with back-off: a handful in 4 s, gaps growing
    assert 2 <= len(asks) <= 6, len(asks)
    gaps = [b - a for a, b in itertools.pairwise(asks)]
    assert all(later > earlier * 1.2 for earlier, later in itertools.pairwise(gaps)), gaps
    gw.still_v2()

    # 2. A newer signed desired state supersedes it; its first request window is lost.
    bundle_b = regression_bundle(_keys(fleet), 3)
    bid_b = _bundle_id(bundle_b)
    spec_b = desired_for_bundle(bundle_b, version=3, bundle_id=bid_b, chunk_size=CHUNK)
    seen = len(gw.listener.on(gw.install_topic))
    gw.listener.publish(topics.down(gw.id, topics.DESIRED), _desired(gw, 2, spec_b))
    server.serve(
        bid_b, len(spec_b.chunks), lambda i: bundle_b[i * CHUNK : (i + 1) * CHUNK],
        seconds=30.0, drop_first=True,
        until=lambda: len(gw.listener.on(gw.install_topic)) > seen,
    )  # fmt: skip
    ack = json.loads(gw.listener.wait_new(gw.install_topic, seen, timeout=10))
    assert ack["ok"] and ack["version"] == 3 and ack["bundle_id"] == bid_b, ack
    first, again = server.asks(bid_b, 0)[:2]
    assert TIMEOUT_S * 0.8 <= again - first <= TIMEOUT_S * 3, again - first
    assert gw.answer() == 3.0
