"""The gateway daemon checks signatures in a child process: the same verdicts as in-process,
nothing of cryptography or python-tuf resident afterwards, and a check process that fails
refuses what it was checking (never passes it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.installer import Installer
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import ModelSet
from farmiq.bundle import signature_process
from farmiq.bundle.trust import TrustError, TrustRoot
from provisioning.fleet import FleetPaths
from tests.security.helpers import fleet_signers, regression_bundle, threshold_fleet
from tests.security.test_bundle_attacks import rotated_root

ROOT = Path(__file__).resolve().parents[2]

# Run as a daemon runs: isolate first, then load the TUF root, install a bundle, take one
# good rotation and refuse a forged one, and list what got imported.
GATEWAY = """
import json, sys
from pathlib import Path
from farmiq.bundle import signature_process
signature_process.isolate()
from edge_agent.models.installer import Installer
from edge_agent.models.model_store import ModelStore
from edge_agent.models.serving import ModelSet
from farmiq.bundle.trust import TrustError, TrustRoot
a = json.loads(sys.argv[1])
trust = TrustRoot.load(a["root"])
inst = Installer(ModelStore(Path(a["state"])), ModelSet(), trust, device_id="gw-1",
                 hardware_class="rpi4", max_bundle_bytes=1_000_000)
good = inst.install(Path(a["good"]).read_bytes())
bad = inst.install(Path(a["bad"]).read_bytes())
rotated = trust.update(Path(a["rotation"]).read_bytes())
again = rotated.update(Path(a["rotation"]).read_bytes())
try:
    rotated.update(Path(a["forged"]).read_bytes())
    forged = "accepted"
except TrustError as exc:
    forged = str(exc)
print(json.dumps({
    "good": good.ok, "bad": [bad.ok, bad.code], "version": rotated.version,
    "again": again is None, "forged": forged,
    "resident": sorted({m.split(".")[0] for m in sys.modules} & {"cryptography", "tuf",
                                                                  "securesystemslib"}),
}))
"""


@pytest.fixture(scope="module")
def tfleet(tmp_path_factory: pytest.TempPathFactory) -> FleetPaths:
    return threshold_fleet(tmp_path_factory.mktemp("sp") / "fleet")


def test_a_daemon_process_verifies_in_a_child_and_keeps_no_crypto_resident(
    tfleet: FleetPaths, tmp_path: Path
) -> None:
    signers = fleet_signers(tfleet)
    files = {
        "good": regression_bundle(signers[:2], 2, "barn"),
        "bad": regression_bundle(signers[:1], 3, "barn"),  # one key, threshold is two
        "rotation": rotated_root(tfleet, [1, 2]),
        "forged": rotated_root(tfleet, [1], version_step=2),  # one root key, skips a version
    }
    args: dict[str, str] = {"root": str(tfleet.root_json), "state": str(tmp_path / "state")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        args[name] = str(tmp_path / name)
    out = subprocess.run(
        [sys.executable, "-c", GATEWAY, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["good"] is True
    assert got["bad"] == [False, "signature"]
    assert got["version"] == 2 and got["again"] is True
    assert "does not follow" in got["forged"] or "threshold" in got["forged"]
    assert got["resident"] == [], "the daemon process imported signature code itself"


def test_a_failing_check_process_refuses_and_the_installed_model_keeps_serving(
    tfleet: FleetPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signers = fleet_signers(tfleet)
    inst = Installer(
        ModelStore(tmp_path / "state"),
        ModelSet(),
        TrustRoot.load(tfleet.root_json),
        device_id="gw-1",
        hardware_class="rpi4",
        max_bundle_bytes=1_000_000,
    )
    assert inst.install(regression_bundle(signers[:2], 2, "barn")).ok
    monkeypatch.setattr(signature_process, "_isolated", True)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child starts and says nothing
    res = inst.install(regression_bundle(signers[:2], 3, "barn"))
    assert not res.ok and res.code == "signature"
    assert "signature check process failed" in res.reason
    model = inst.models.get("barn")
    assert model is not None
    assert float(model.run({"x": np.ones((1, 2), np.float32)})["y"][0, 0]) == 2.0
    with pytest.raises(TrustError, match="signature check process failed"):
        TrustRoot.load(tfleet.root_json)
