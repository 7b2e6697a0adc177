"""The director role against a real agent process over the real broker.

Every document the control plane sends a gateway that can change what it runs or does
(``down/desired``, ``down/actuator``, ``down/features``, ``down/ack``) must be a director
envelope (farmiq/director/envelope.py): signed by the fleet root's director keys, for this
device, on this leaf, not expired, with a counter above the last one accepted. The agent
runs ``farmiq agent run`` with the fleet's TUF root.json and serves ``barn`` v2 (y = 2x)
with v1 kept as its previous version. Each forged document is published like an intruder
on the link would; the refusal code arrives on ``up/director`` and the farm is still
served by v2. A signed desired state is the only way back to v1.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from farmiq import topics
from farmiq.bundle.signing import Signer
from farmiq.director.envelope import seal
from farmiq.director.gate import REPORT_LEAF
from provisioning.fleet import FleetPaths
from tests.security.helpers import Listener, fleet_signers, regression_bundle, threshold_fleet
from tests.support.procs import AgentProc

NAME = "barn"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPaths:
    return threshold_fleet(tmp_path_factory.mktemp("director") / "fleet")


@pytest.fixture(scope="module")
def director(fleet: FleetPaths) -> list[Signer]:
    keys = [Signer.load(p) for p in fleet.director_keys()]
    assert keys, "init_fleet made no director key"
    return keys


class Gateway:
    def __init__(self, agent: AgentProc, listener: Listener, director: list[Signer]) -> None:
        self.agent = agent
        self.listener = listener
        self.director = director
        self.id = agent.device_id
        self.report_topic = topics.up(self.id, REPORT_LEAF)
        self.install_topic = topics.up(self.id, topics.INSTALL_ACK)
        self.counter = int(time.time() * 1_000_000)

    def signed(
        self, leaf: str, body: dict[str, Any], *, device: str | None = None,
        signers: list[Signer] | None = None, ttl_s: float | None = None,
        counter: int | None = None, now: float | None = None,
    ) -> bytes:  # fmt: skip
        if counter is None:
            self.counter += 1
            counter = self.counter
        return seal(
            signers if signers is not None else self.director,
            leaf=leaf, device=device or self.id, counter=counter,
            body=json.dumps(body).encode(), ttl_s=ttl_s, now=now,
        )  # fmt: skip

    def refused(self, leaf: str, payload: bytes, code: str) -> dict[str, Any]:
        seen = len(self.listener.on(self.report_topic))
        self.listener.publish(topics.down(self.id, leaf), payload)
        # The first new report on this leaf. Others may come between: another test's control
        # plane on the shared broker pushes its cloud features (retained, under its own
        # director) to every gateway it sees, and this agent refuses them when it
        # resubscribes after a restart.
        while True:
            report = json.loads(self.listener.wait_new(self.report_topic, seen))
            seen += 1
            if report.get("leaf") == leaf:
                break
        assert report["ok"] is False, report
        assert report["code"] == code and report["reason"], report
        assert report["device_id"] == self.id
        return report  # type: ignore[no-any-return]

    def answer(self) -> float:
        r = self.agent.post("/api/v1/inference", {"model": NAME, "inputs": [[1.0, 1.0]]})
        assert r.status_code == 200, r.text
        return float(r.json()["outputs"]["y"][0][0])

    def still_v2(self) -> None:
        status = self.agent.get("/api/v1/status").json()
        assert status["ready"] is True
        assert self.agent.installed_version(NAME) == 2
        assert self.answer() == 2.0, "the farm is no longer served by v2"


def desired(version: int | None, bundle_id: str | None, rev: int, **extra: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"version": version, "bundle_id": bundle_id, **extra}
    return {"rev": rev, "issued": time.time(), "models": {NAME: model}}


def live_gateway(
    work: Path, mqtt_port: int, fleet: FleetPaths, director: list[Signer],
    versions: tuple[int, ...], **settings: object,
) -> Gateway:  # fmt: skip
    """A real agent on the fleet's root, serving ``barn`` at the last of ``versions``
    (installed in order over the broker, so the one before is kept as previous)."""
    device = f"gw-live-{uuid.uuid4().hex[:8]}"
    agent = AgentProc(work / device, device, mqtt_port, fleet.root_json, **settings)
    agent.start()
    listener = Listener(mqtt_port, [topics.up(device, "#")])
    gw = Gateway(agent, listener, director)
    agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
    keys = fleet_signers(fleet)
    for v in versions:
        seen = len(listener.on(gw.install_topic))
        listener.publish(topics.down(device, topics.BUNDLE), regression_bundle(keys[:2], v))
        ack = json.loads(listener.wait_new(gw.install_topic, seen))
        assert ack["ok"] and ack["version"] == v, ack
    assert gw.answer() == float(versions[-1])
    return gw


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    mqtt_port: int,
    fleet: FleetPaths,
    director: list[Signer],
) -> Iterator[Gateway]:
    gw = live_gateway(
        tmp_path_factory.mktemp("gw"), mqtt_port, fleet, director, (1, 2),
        max_bundle_bytes=2_000_000,
    )  # fmt: skip
    yield gw
    gw.listener.publish(topics.down(gw.id, topics.DESIRED), b"", retain=True)
    gw.listener.close()
    gw.agent.stop()


def test_unsigned_desired_state_cannot_roll_back_or_block(gateway: Gateway) -> None:
    # The attacks of issue 13: a plain desired state naming the kept v1 (a downgrade with
    # no signed order), `blocked` naming the running v2 (a forced downgrade), `blocked`
    # naming future versions (a denial of every genuine update).
    for doc in (
        desired(1, "b" * 16, 900),
        desired(None, None, 901, blocked=[2]),
        desired(None, None, 902, blocked=[3, 4, 5]),
    ):
        gateway.refused(topics.DESIRED, json.dumps(doc).encode(), "unsigned")
    gateway.still_v2()
    status = gateway.agent.get("/api/v1/status").json()
    assert not any(status.get("blocked", {}).values()), status.get("blocked")


def test_forged_misaddressed_or_expired_desired_state_is_refused(gateway: Gateway) -> None:
    doc = desired(None, None, 910, blocked=[2])
    thief = [Signer.generate()]
    gateway.refused(topics.DESIRED, gateway.signed(topics.DESIRED, doc, signers=thief), "signature")
    other = gateway.signed(topics.DESIRED, doc, device="gw-someone-else")
    gateway.refused(topics.DESIRED, other, "not-for-device")
    on_wrong_leaf = gateway.signed(topics.FEATURES, doc)  # a features envelope as desired
    gateway.refused(topics.DESIRED, on_wrong_leaf, "wrong-leaf")
    stale = gateway.signed(topics.DESIRED, doc, now=time.time() - 7200, ttl_s=3600)
    gateway.refused(topics.DESIRED, stale, "expired")
    gateway.still_v2()


def test_actuator_commands_need_the_director(gateway: Gateway) -> None:
    cmd = {"command_id": uuid.uuid4().hex, "actuator": "heater", "value": 1.0}
    gateway.refused(topics.ACTUATOR, json.dumps(cmd).encode(), "unsigned")
    thief = gateway.signed(topics.ACTUATOR, cmd, signers=[Signer.generate()])
    gateway.refused(topics.ACTUATOR, thief, "signature")
    old = gateway.signed(topics.ACTUATOR, cmd, now=time.time() - 600)  # 5-minute life
    gateway.refused(topics.ACTUATOR, old, "expired")
    # cloud features and outbox acks (which delete data the gateway still owes) too
    gateway.refused(topics.FEATURES, b'{"barn_id": {"b1": {"x": 1}}}', "unsigned")
    gateway.refused(topics.OUTBOX_ACK, b'{"keys": ["a"]}', "unsigned")
    metrics = gateway.agent.get("/metrics").text
    assert 'farmiq_director_refused_total{code="unsigned",leaf="actuator"}' in metrics


def test_replayed_and_out_of_order_documents_are_refused_across_a_restart(
    gateway: Gateway,
) -> None:
    first = gateway.signed(topics.DESIRED, desired(None, None, 920))
    second = gateway.signed(topics.DESIRED, desired(None, None, 921))
    for doc in (first, second):  # both genuine: accepted in order, nothing to do
        gateway.listener.publish(topics.down(gateway.id, topics.DESIRED), doc)
    gateway.refused(topics.DESIRED, first, "out-of-order")  # a captured older document
    same_counter = gateway.signed(
        topics.DESIRED, desired(None, None, 922, blocked=[2]), counter=gateway.counter
    )
    gateway.refused(topics.DESIRED, same_counter, "replayed")
    gateway.agent.restart()  # the counters are on disk, not only in memory
    gateway.agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
    gateway.refused(topics.DESIRED, first, "out-of-order")
    gateway.still_v2()


def test_rollback_only_through_a_signed_desired_state(gateway: Gateway) -> None:
    prev = gateway.agent.get(f"/api/v1/models/{NAME}").json()
    assert prev["version"] == 2
    seen = len(gateway.listener.on(gateway.install_topic))
    order = gateway.signed(topics.DESIRED, desired(1, "0" * 16, 930))  # the kept v1: local
    gateway.listener.publish(topics.down(gateway.id, topics.DESIRED), order)
    ack = json.loads(gateway.listener.wait_new(gateway.install_topic, seen))
    assert ack["ok"] and ack["code"] == "rolled-back" and ack["version"] == 1, ack
    assert gateway.answer() == 1.0
