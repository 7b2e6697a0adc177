"""Every bundle attack against a real agent process over the real broker.

The gateway runs ``farmiq agent run`` with the fleet's TUF root.json (bundle signatures
needed: 2 of 3 targets keys) and serves ``barn`` v2 (y = 2x). Each attack is published to
``farmiq/v1/gw/{id}/down/bundle`` like a control plane (or an intruder on the link) would.
For each one we check what an operator would see: the rejection code arrives on the broker
(``up/install``), the agent's own status reports it, and the farm is still served by v2.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Root

from farmiq import topics
from farmiq.bundle.builder import read_container
from farmiq.bundle.format import canonical_json, pack
from farmiq.bundle.signing import Signer
from provisioning.fleet import FleetPaths, signer_from_file
from tests.security.helpers import (
    Listener,
    fleet_signers,
    next_root,
    regression_bundle,
    threshold_fleet,
)
from tests.support.procs import AgentProc

NAME = "barn"
HW = "rpi4"
MAX_BUNDLE = 2_000_000


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPaths:
    return threshold_fleet(tmp_path_factory.mktemp("live") / "fleet")


@pytest.fixture(scope="module")
def keys(fleet: FleetPaths) -> list[Signer]:
    return fleet_signers(fleet)


def make_bundle(signers: list[Signer], version: int, **kw: Any) -> bytes:
    return regression_bundle(signers, version, NAME, **kw)


class Gateway:
    """A running agent plus a listener on its up/install and up/trust topics."""

    def __init__(self, agent: AgentProc, listener: Listener) -> None:
        self.agent = agent
        self.listener = listener
        self.id = agent.device_id
        self.install_topic = topics.up(self.id, topics.INSTALL_ACK)
        self.trust_topic = topics.up(self.id, topics.TRUST)

    def send(self, leaf: str, payload: bytes, answer_topic: str) -> dict[str, Any]:
        seen = len(self.listener.on(answer_topic))
        self.listener.publish(topics.down(self.id, leaf), payload)
        return json.loads(self.listener.wait_new(answer_topic, seen))  # type: ignore[no-any-return]

    def push(self, bundle: bytes) -> dict[str, Any]:
        return self.send(topics.BUNDLE, bundle, self.install_topic)

    def rotate(self, root: bytes) -> dict[str, Any]:
        return self.send(topics.TRUST, root, self.trust_topic)

    def answer(self) -> float:
        r = self.agent.post("/api/v1/inference", {"model": NAME, "inputs": [[1.0, 1.0]]})
        assert r.status_code == 200, r.text
        return float(r.json()["outputs"]["y"][0][0])

    def trust_file(self) -> Path:
        return self.agent.workdir / "trust_root.json"


def start_gateway(
    workdir: Path, port: int, fleet: FleetPaths, trust: Path | None = None
) -> Gateway:
    device = f"gw-{uuid.uuid4().hex[:10]}"
    agent = AgentProc(
        workdir / device,
        device,
        port,
        trust or fleet.root_json,
        hardware_class=HW,
        max_bundle_bytes=MAX_BUNDLE,
    )
    agent.start()
    listener = Listener(port, [topics.up(device, "#")])
    gw = Gateway(agent, listener)
    agent.wait_for(lambda s: s["broker_connected"], what="broker connection")
    return gw


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, mqtt_port: int, fleet: FleetPaths, keys: list[Signer]
) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), mqtt_port, fleet)
    ack = gw.push(make_bundle(keys[:2], 2))
    assert ack["ok"] and ack["version"] == 2, ack
    assert gw.answer() == 2.0
    yield gw
    gw.listener.close()
    gw.agent.stop()


def refused(gw: Gateway, bundle: bytes, code: str) -> None:
    ack = gw.push(bundle)
    assert ack["ok"] is False and ack["code"] == code, ack  # the ack reached the broker
    assert ack["device_id"] == gw.id and ack["reason"]
    status = gw.agent.get("/api/v1/status").json()
    assert status["last_install"]["code"] == code, status["last_install"]
    assert status["ready"] is True
    assert gw.agent.installed_version(NAME) == 2
    assert gw.answer() == 2.0, "the farm is no longer served by the previous model"


# --- signatures -------------------------------------------------------------------------
def test_unsigned_bundle_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    manifest, _, members = read_container(make_bundle(keys[:2], 3))
    refused(gateway, pack(manifest, [], members), "unsigned")


def test_unknown_key_over_broker(gateway: Gateway) -> None:
    refused(gateway, make_bundle([Signer.generate(), Signer.generate()], 3), "untrusted-key")


def test_below_threshold_signatures_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    refused(gateway, make_bundle(keys[:1], 3), "signature")  # one stolen key of two needed
    manifest, sigs, members = read_container(make_bundle(keys[:1], 3))
    refused(gateway, pack(manifest, sigs + sigs, members), "signature")  # one key, twice
    mixed = make_bundle([keys[0], Signer.generate()], 3)  # plus a key of the thief's own
    refused(gateway, mixed, "signature")


def test_tampered_member_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    manifest, sigs, members = read_container(make_bundle(keys[:2], 3))
    model = members["model/model.onnx"]
    members["model/model.onnx"] = model.replace(b"\x00\x00@@", b"\x00\x00\x80@")  # k 3 -> 4
    assert members["model/model.onnx"] != model
    refused(gateway, pack(manifest, sigs, members), "hash")


def test_revoked_key_over_broker_after_root_rotation(
    gateway: Gateway, fleet: FleetPaths, keys: list[Signer]
) -> None:
    # An old root key alone cannot rotate the root (a thief with one root key).
    thief = gateway.rotate(next_root(fleet, gateway.trust_file(), [3], drop_targets=2))
    assert thief["ok"] is False and thief["code"] == "trust", thief
    # The fleet's root keys (2 of 3) revoke targets key 3.
    before = Metadata[Root].from_file(str(gateway.trust_file())).signed.version
    ack = gateway.rotate(next_root(fleet, gateway.trust_file(), [1, 2], drop_targets=3))
    assert ack["ok"] and ack["code"] == "rotated" and ack["version"] == before + 1, ack
    # Persisted before use: the file on the gateway is the new root.
    assert Metadata[Root].from_file(str(gateway.trust_file())).signed.version == before + 1
    # The same root delivered again (a retained message after a reconnect) changes nothing.
    same = gateway.rotate(gateway.trust_file().read_bytes())
    assert same["ok"] and same["code"] == "current", same
    refused(gateway, make_bundle([keys[0], keys[2]], 3), "signature")  # key 3 is revoked


# --- rollback and freeze ----------------------------------------------------------------
def test_rollback_without_order_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    refused(gateway, make_bundle(keys[:2], 1), "rollback")
    refused(gateway, make_bundle(keys[:2], 1, rollback_of=7), "rollback")  # an old order


def test_expired_metadata_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    stale = make_bundle(keys[:2], 3, expires_in=dt.timedelta(seconds=-1))
    refused(gateway, stale, "expired")


# --- mix-and-match, targeting, sizes, paths ---------------------------------------------
def test_mix_and_match_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    m3, s3, members3 = read_container(make_bundle(keys[:2], 3))
    _, _, members9 = read_container(make_bundle(keys[:2], 9))
    refused(gateway, pack(m3, s3, members9), "hash")
    refused(gateway, pack(m3, s3, {**members3, "extra.bin": b"x"}), "members")


def test_bundle_for_other_device_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    other = make_bundle(keys[:2], 3, targeting={"devices": ["gw-someone-else"]})
    refused(gateway, other, "not-for-device")


def test_bundle_for_other_hardware_class_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    other = make_bundle(keys[:2], 3, targeting={"devices": [gateway.id], "hardware": ["jetson"]})
    refused(gateway, other, "not-for-hardware")


def test_endless_data_over_broker(gateway: Gateway, keys: list[Signer]) -> None:
    manifest, sigs, members = read_container(make_bundle(keys[:2], 3))
    members["model/model.onnx"] += b"\0" * 100_000  # more than the signed size
    refused(gateway, pack(manifest, sigs, members), "size")
    refused(gateway, b"\0" * (MAX_BUNDLE + 1), "size")  # more than the agent accepts at all


def resigned(keys: list[Signer], change: Any) -> bytes:
    """A genuinely signed bundle whose manifest ``change(dict)`` edited before signing (a
    compromised or buggy build pipeline: the signatures are good, the content is hostile)."""
    manifest, _, members = read_container(make_bundle(keys[:2], 3))
    doc = json.loads(manifest)
    change(doc)
    body = canonical_json(doc)
    return pack(body, [k.sign(body) for k in keys[:2]], members)


def test_declared_terabyte_member_is_refused_before_reading_over_broker(
    gateway: Gateway, keys: list[Signer]
) -> None:
    def huge(doc: dict[str, Any]) -> None:
        doc["members"]["model/model.onnx"]["size"] = 10**12  # 1 TB: MemoryError before

    refused(gateway, resigned(keys, huge), "size")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("expires", "never"),
        ("expires", "2099-01-01T00:00:00"),  # no time zone
        ("min_agent_version", "not-a-version"),
    ],
    ids=["expires-never", "expires-naive", "min-agent-version"],
)
def test_malformed_signed_fields_are_refused_with_a_report_over_broker(
    gateway: Gateway, keys: list[Signer], field: str, value: str
) -> None:
    refused(gateway, resigned(keys, lambda doc: doc.update({field: value})), "manifest")


@pytest.mark.parametrize(
    "entry",
    [
        ("../../etc/cron.d/x", b"* * * * * root true\n", None),
        ("/etc/passwd", b"x", None),
        ("model/link", None, "/etc/shadow"),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_archive_path_tricks_over_broker(
    gateway: Gateway, keys: list[Signer], entry: tuple[str, bytes | None, str | None]
) -> None:
    manifest, sigs, members = read_container(make_bundle(keys[:2], 3))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        sig_file = canonical_json({"signatures": sigs})
        parts = [("manifest.json", manifest), ("signatures.json", sig_file)]
        for name, data in parts + sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        trick, payload, link = entry
        info = tarfile.TarInfo(trick)
        if link is not None:
            info.type, info.linkname = tarfile.SYMTYPE, link
            tar.addfile(info)
        else:
            info.size = len(payload or b"")
            tar.addfile(info, io.BytesIO(payload or b""))
    refused(gateway, buf.getvalue(), "path")


def test_valid_update_still_installs_after_the_attacks(
    gateway: Gateway, keys: list[Signer]
) -> None:
    """The control: after every refusal above, a properly signed v3 is accepted and served."""
    ack = gateway.push(make_bundle(keys[:2], 3, targeting={"devices": [gateway.id]}))
    assert ack["ok"] and ack["version"] == 3 and ack["previous_version"] == 2, ack
    assert gateway.answer() == 3.0


# --- offline grace ----------------------------------------------------------------------
def test_expired_root_after_restart_keeps_serving_but_refuses_new_bundles(
    tmp_path: Path, mqtt_port: int, fleet: FleetPaths, keys: list[Signer]
) -> None:
    gw = start_gateway(tmp_path, mqtt_port, fleet)
    try:
        assert gw.push(make_bundle(keys[:2], 2))["ok"]
        # Weeks offline: meanwhile the root on the gateway has expired (same keys, signed by
        # the fleet's root threshold, expiry in the past), then the gateway reboots.
        gw.agent.stop()
        md = Metadata[Root].from_file(str(fleet.root_json))
        md.signed.expires = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        md.signatures.clear()
        for n in (1, 2):
            md.sign(signer_from_file(fleet.root_key(n)), append=True)
        gw.trust_file().write_bytes(md.to_bytes())
        gw.agent.start()
        gw.agent.wait_for(lambda s: s["ready"] and s["broker_connected"], what="serving")
        assert gw.answer() == 2.0  # the farm keeps running its model
        ack = gw.push(make_bundle(keys[:2], 3))
        assert ack["ok"] is False and ack["code"] == "expired", ack  # but takes no update
        assert gw.answer() == 2.0
    finally:
        gw.listener.close()
        gw.agent.stop()
