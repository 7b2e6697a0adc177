"""Adversarial suite for bundle trust, run through the agent's real install path.

Each attack is fed to ``edge_agent.models.installer.Installer`` (real on-disk model store, real
ONNX Runtime) whose trust root is the fleet's TUF root.json from ``init-fleet`` (targets
threshold 2 of 3). For every attack the install must be refused with a reason code and the
installed model must keep answering.
"""

from __future__ import annotations

import datetime as dt
import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tuf.api.metadata import Metadata, Root

from edge_agent.models.installer import Installer
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import ModelSet
from farmiq.bundle.builder import read_container
from farmiq.bundle.format import canonical_json, pack
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustError, TrustRoot
from provisioning.fleet import FleetPaths, signer_from_file
from tests.security.helpers import (
    fleet_signers,
    regression_bundle,
    signature_checks,
    threshold_fleet,
)

NAME = "barn"
DEVICE = "gw-1"
HW = "rpi4"
# every test twice: checks in-process, and in a child process as the daemon makes them
pytestmark = pytest.mark.usefixtures(signature_checks.__name__)


@pytest.fixture(scope="module")
def tfleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPaths:
    return threshold_fleet(tmp_path_factory.mktemp("tf") / "fleet")


@pytest.fixture(scope="module")
def signers(tfleet: FleetPaths) -> list[Signer]:
    return fleet_signers(tfleet)


def bundle(signers: list[Signer], version: int, **kw: Any) -> bytes:
    return regression_bundle(signers, version, NAME, **kw)


@pytest.fixture()
def agent(tfleet: FleetPaths, signers: list[Signer], tmp_path: Path) -> Installer:
    """An installer serving version 2, installed through the normal path."""
    inst = Installer(
        ModelStore(tmp_path / "state"),
        ModelSet(),
        TrustRoot.load(tfleet.root_json),
        device_id=DEVICE,
        hardware_class=HW,
        max_bundle_bytes=1_000_000,
    )
    res = inst.install(bundle(signers[:2], 2))
    assert res.ok, res
    return inst


def answer(inst: Installer) -> float:
    model = inst.models.get(NAME)
    assert model is not None
    return float(model.run({"x": np.ones((1, 2), np.float32)})["y"][0, 0])


def refused(inst: Installer, data: bytes, code: str) -> None:
    res = inst.install(data)
    assert not res.ok and res.code == code, res
    assert answer(inst) == 2.0, "the installed model stopped serving"


def retar(entries: list[tuple[str, bytes | None, str | None]]) -> bytes:
    """Write a tar by hand: (name, data, symlink target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def rotated_root(
    tfleet: FleetPaths,
    signer_keys: list[int],
    *,
    drop_targets: int | None = None,
    add_targets: Signer | None = None,
    version_step: int = 1,
) -> bytes:
    md = Metadata[Root].from_file(str(tfleet.root_json))
    root = md.signed
    root.version += version_step
    if drop_targets is not None:
        from securesystemslib.signer import SSlibKey

        pub = Signer.load(tfleet.targets_key(drop_targets)).public_key
        root.revoke_key(SSlibKey.from_crypto(pub).keyid, "targets")
    if add_targets is not None:
        from securesystemslib.signer import SSlibKey

        root.add_key(SSlibKey.from_crypto(add_targets.public_key), "targets")
    md.signatures.clear()
    for n in signer_keys:
        md.sign(signer_from_file(tfleet.root_key(n)), append=True)
    return md.to_bytes()


# --- signatures -------------------------------------------------------------------------
def test_unsigned_bundle(agent: Installer, signers: list[Signer]) -> None:
    manifest, _, members = read_container(bundle(signers[:2], 3))
    refused(agent, pack(manifest, [], members), "unsigned")


def test_unknown_keys(agent: Installer) -> None:
    refused(agent, bundle([Signer.generate(), Signer.generate()], 3), "untrusted-key")


def test_tampered_member(agent: Installer, signers: list[Signer]) -> None:
    manifest, sigs, members = read_container(bundle(signers[:2], 3))
    model = members["model/model.onnx"]
    members["model/model.onnx"] = model.replace(b"\x00\x00@@", b"\x00\x00\x80@")  # k 3.0 -> 4.0
    assert members["model/model.onnx"] != model
    refused(agent, pack(manifest, sigs, members), "hash")


def test_threshold_compromise_one_key_is_not_enough(
    agent: Installer, signers: list[Signer]
) -> None:
    refused(agent, bundle(signers[:1], 3), "signature")
    # The same stolen key signing twice still counts once.
    manifest, sigs, members = read_container(bundle(signers[:1], 3))
    refused(agent, pack(manifest, sigs + sigs, members), "signature")


def test_revoked_key_by_root_rotation(
    agent: Installer, tfleet: FleetPaths, signers: list[Signer]
) -> None:
    agent.trust = agent.trust.rotate(rotated_root(tfleet, [1, 2], drop_targets=3))
    refused(agent, bundle([signers[0], signers[2]], 3), "signature")  # key 3 revoked
    assert agent.install(bundle(signers[:2], 3)).ok


def test_root_rotation_needs_old_root_threshold(
    agent: Installer, tfleet: FleetPaths, signers: list[Signer]
) -> None:
    trust = agent.trust
    new_key = Signer.generate()
    with pytest.raises(TrustError, match="current root threshold"):
        trust.rotate(rotated_root(tfleet, [1], add_targets=new_key))  # one stolen root key
    with pytest.raises(TrustError, match="does not follow"):
        trust.rotate(rotated_root(tfleet, [1, 2, 3], version_step=2))  # skipped version
    rotated = trust.rotate(rotated_root(tfleet, [2, 3], add_targets=new_key))
    assert rotated.version == trust.version + 1
    agent.trust = rotated
    assert agent.install(bundle([new_key, signers[0]], 3)).ok  # the new key now counts
    assert answer(agent) == 3.0


def test_forged_root_file_is_refused(tfleet: FleetPaths, tmp_path: Path) -> None:
    forged = tmp_path / "root.json"
    forged.write_bytes(rotated_root(tfleet, [1], version_step=0))  # below its own threshold
    with pytest.raises(TrustError, match="threshold"):
        TrustRoot.load(forged)


# --- rollback and freeze ----------------------------------------------------------------
def test_rollback_refused_unless_signed_order_for_installed_version(
    agent: Installer, signers: list[Signer]
) -> None:
    refused(agent, bundle(signers[:2], 1), "rollback")
    refused(agent, bundle(signers[:2], 1, rollback_of=5), "rollback")  # replayed old order
    res = agent.install(bundle(signers[:2], 1, rollback_of=2))
    assert res.ok and answer(agent) == 1.0


def test_freeze_stale_bundle_refused(agent: Installer, signers: list[Signer]) -> None:
    refused(agent, bundle(signers[:2], 3, expires_in=dt.timedelta(seconds=-1)), "expired")


def test_freeze_expired_root_refuses_updates_but_keeps_serving_offline(
    agent: Installer, signers: list[Signer], tfleet: FleetPaths, tmp_path: Path
) -> None:
    md = Metadata[Root].from_file(str(tfleet.root_json))
    md.signed.expires = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    md.signatures.clear()
    for n in (1, 2):
        md.sign(signer_from_file(tfleet.root_key(n)), append=True)
    stale = TrustRoot.parse(md.to_bytes())
    agent.trust = stale
    refused(agent, bundle(signers[:2], 3), "expired")
    # Weeks offline, then a reboot: the installed model still loads and serves.
    restarted = Installer(
        agent.store,
        ModelSet(),
        stale,
        device_id=DEVICE,
        hardware_class=HW,
        max_bundle_bytes=1_000_000,
    )
    assert restarted.load_installed() == [NAME]
    assert answer(restarted) == 2.0


# --- mix-and-match, targeting, sizes, paths ---------------------------------------------
def test_mix_and_match_members_from_two_signed_bundles(
    agent: Installer, signers: list[Signer]
) -> None:
    m3, s3, _ = read_container(bundle(signers[:2], 3))
    _, _, members9 = read_container(bundle(signers[:2], 9))
    refused(agent, pack(m3, s3, members9), "hash")
    _, _, members3 = read_container(bundle(signers[:2], 3))
    refused(agent, pack(m3, s3, {**members3, "extra.bin": b"x"}), "members")


def test_bundle_for_another_device_or_hardware(agent: Installer, signers: list[Signer]) -> None:
    refused(agent, bundle(signers[:2], 3, targeting={"devices": ["gw-2"]}), "not-for-device")
    refused(agent, bundle(signers[:2], 3, targeting={"hardware": ["jetson"]}), "not-for-hardware")
    assert agent.install(
        bundle(signers[:2], 3, targeting={"devices": [DEVICE], "hardware": [HW]})
    ).ok


def test_endless_data(agent: Installer, signers: list[Signer]) -> None:
    manifest, sigs, members = read_container(bundle(signers[:2], 3))
    members["model/model.onnx"] += b"\0" * 100_000  # more than the signed size
    refused(agent, pack(manifest, sigs, members), "size")
    refused(agent, b"\0" * 2_000_000, "size")  # over the agent's bundle limit


@pytest.mark.parametrize(
    "entry",
    [
        ("../../etc/cron.d/x", b"x", None),
        ("/etc/passwd", b"x", None),
        ("model/link", None, "/etc/shadow"),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_archive_path_tricks(
    agent: Installer, signers: list[Signer], entry: tuple[str, bytes | None, str | None]
) -> None:
    manifest, sigs, members = read_container(bundle(signers[:2], 3))
    entries: list[tuple[str, bytes | None, str | None]] = [
        ("manifest.json", manifest, None),
        ("signatures.json", canonical_json({"signatures": sigs}), None),
    ]
    entries += [(k, v, None) for k, v in members.items()] + [entry]
    refused(agent, retar(entries), "path")
