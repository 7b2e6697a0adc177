"""The control plane's director counter: shared by replicas, never backwards, and what it
seals opens on a gateway's verifier only for the device and leaf it names."""

from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest

from control_plane.db import Database
from control_plane.director import Director
from farmiq import topics
from farmiq.bundle.signing import Signer
from farmiq.director.verifier import DirectorRefused, DirectorVerifier


def test_counter_grows_across_replicas_and_survives_a_clock_step_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    Database(url).create_all()
    key = Signer.generate()
    a, b = Director(Database(url), [key]), Director(Database(url), [key])  # two replicas
    seen = [r.next_counter("gw-1") for _ in range(5) for r in (a, b)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    with mock.patch("control_plane.director.time.time", return_value=time.time() - 3600):
        assert a.next_counter("gw-1") > seen[-1]  # the row carries it past the clock
    assert b.next_counter("gw-2") > 0  # per device rows


def test_sealed_documents_open_only_for_their_device_and_leaf(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    Database(url).create_all()
    key = Signer.generate()
    director = Director(Database(url), [key])
    verifier = DirectorVerifier("gw-1", {key.keyid: key.public_hex()}, 1)
    topic = topics.down("gw-1", topics.ACTUATOR)
    sealed = director.wrap(topic, b'{"actuator": "fan", "value": 0.5}')
    assert verifier.open(topics.ACTUATOR, sealed).body == b'{"actuator": "fan", "value": 0.5}'
    assert director.wrap(topics.down("gw-1", topics.CHUNK), b"raw") == b"raw"  # hashed already
    assert director.wrap(topics.down("gw-1", topics.DESIRED), b"") == b""  # clears retained
    other = DirectorVerifier("gw-2", {key.keyid: key.public_hex()}, 1)
    with pytest.raises(DirectorRefused) as exc:
        other.open(topics.ACTUATOR, sealed)
    assert exc.value.code == "not-for-device"


def test_returning_gateway_gets_its_old_desired_state_re_signed(tmp_path: Path) -> None:
    from control_plane.director import DesiredRefresher
    from control_plane.rollout.tables import DesiredState

    db = Database(f"sqlite:///{tmp_path / 'cp.db'}")
    db.create_all()
    ttl = 30 * 86400.0
    with db.session() as s:  # signed 20 days ago, half-life is 15 days
        s.add(DesiredState(device_id="gw-old", doc={"rev": 3, "models": {}}, rev=3,
                           updated=time.time() - 20 * 86400))  # fmt: skip
        s.add(DesiredState(device_id="gw-new", doc={"rev": 1, "models": {}}, rev=1,
                           updated=time.time()))  # fmt: skip
    sent: list[str] = []
    refresher = DesiredRefresher(db, lambda topic, body: sent.append(topic), ttl)
    refresher.on_status("gw-old", b"offline")
    refresher.on_status("gw-new", b"online")
    refresher.on_status("gw-old", b"online")
    refresher.on_status("gw-old", b"online")  # once per half-life, not per reconnect
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert sent == [topics.down("gw-old", topics.DESIRED)]
