"""Fixtures for gateway robustness tests: a real agent serving ``barn`` v2, signed with the
real test control plane's key, with a listener on its ``up/#`` topics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from farmiq import topics
from farmiq.bundle.signing import Signer
from tests.edge_robustness.helpers import Gateway, make_bundle
from tests.security.helpers import Listener
from tests.support.procs import AgentProc, ControlPlaneProc


@pytest.fixture(scope="module")
def signer(control_plane: ControlPlaneProc) -> Signer:
    return Signer.load(control_plane.data_dir / "keys" / "bundle-signing.pem")


@pytest.fixture
def gateway_factory(
    agent_factory: Callable[..., AgentProc],
    control_plane: ControlPlaneProc,
    mqtt_port: int,
    device_id: str,
    signer: Signer,
) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(version: int | None = 2, **settings: Any) -> Gateway:
        agent = agent_factory(device_id, control_plane.trust_root(), **settings)
        gw = Gateway(agent, Listener(mqtt_port, [topics.up(device_id, "#")]), signer)
        made.append(gw)
        agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
        if version is not None:
            ack = gw.push(make_bundle(signer, version))
            assert ack["ok"] and ack["version"] == version, ack
            assert gw.answer() == float(version)
        return gw

    yield make
    for gw in made:
        gw.close()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory()
