"""Command-line set-up mistakes are one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from farmiq_sim.net import free_port
from provisioning import device_registry


def farmiq(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmiq", *args], capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and '"level"' not in ln]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trust_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    r = farmiq("bundle", "keygen", "--key", str(d / "k.pem"), "--trust-root", str(d / "t.json"))
    assert r.returncode == 0, r.stderr
    return d / "t.json"


def test_fleet_simulate_without_a_broker(trust_root: Path) -> None:
    port = free_port()
    r = farmiq(
        "fleet", "simulate", "--gateways", "2", "--duration", "1",
        "--broker", f"127.0.0.1:{port}", "--trust-root", str(trust_root),
    )  # fmt: skip
    line = _one_line_error(r)
    assert f"no MQTT broker at 127.0.0.1:{port}" in line


def test_rollout_against_an_unreachable_control_plane() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(farmiq("rollout", "--url", url, "list"))
    assert line.startswith(f"farmiq rollout: cannot reach the control plane at {url}")


def test_the_trust_flag_is_trust_root_everywhere(trust_root: Path, tmp_path: Path) -> None:
    verify_help = farmiq("bundle", "verify", "--help").stdout
    assert "--trust-root" in verify_help and "--trust " not in verify_help
    assert "--trust-root" in farmiq("fleet", "simulate", "--help").stdout
    junk = tmp_path / "junk.fqb"
    junk.write_bytes(b"not a bundle")
    for flag in ("--trust-root", "--trust"):  # the old name still works, unadvertised
        r = farmiq("bundle", "verify", str(junk), flag, str(trust_root))
        assert r.returncode == 1 and r.stderr.startswith("REJECTED"), r.stderr
    assert "--trust-root is required" in _one_line_error(farmiq("bundle", "verify", str(junk)))


def test_provision_help_has_no_developer_notes() -> None:
    out = farmiq("provision", "--help").stdout
    assert "Imports stay" not in out and "``" not in out
    assert "enrollment" in out


@pytest.mark.parametrize("form", [["--token", "-Xy_z"], ["--token=-Xy_z"]])
def test_enroll_takes_a_token_that_starts_with_a_dash(form: list[str], tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = farmiq(
        "provision", "enroll", "--url", url, *form, "--device-id", "barn-x",
        "--out", str(tmp_path / "etc"),
    )  # fmt: skip
    # The token was taken as the token: the failure is the unreachable URL, not argparse.
    assert r.returncode == 1, r.stderr
    assert "cannot reach control plane" in r.stderr and "expected one argument" not in r.stderr


def test_tokens_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-starts-with-dash", "-again", "fine-token"])
    monkeypatch.setattr(device_registry.secrets, "token_urlsafe", lambda n: next(drawn))
    assert device_registry.new_token() == "fine-token"
    monkeypatch.undo()
    assert not any(device_registry.new_token().startswith("-") for _ in range(2000))
