"""Secure by default: a control plane started with no security settings at all asks for a
key on every /api/v1 call; ``--insecure`` opens it with a warning at every start, and even
then every change is audited (actor ``local``) and can be queried with ``farmiq audit``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.procs import ENV, ControlPlaneProc


def test_default_control_plane_needs_a_key_and_insecure_is_warned_and_audited(
    tmp_path: Path, mqtt_port: int
) -> None:
    cp = ControlPlaneProc(tmp_path / "default", mqtt_port, insecure=False)
    # ControlPlaneProc writes auth_enabled = false for the tests not about auth: drop it,
    # so this control plane runs on its own default.
    toml = cp.workdir / "cp.toml"
    lines = toml.read_text().splitlines(keepends=True)
    toml.write_text("".join(ln for ln in lines if not ln.startswith("auth_enabled")))
    cp.start()
    try:
        assert httpx.get(cp.url + "/api/v1/rollouts").status_code == 401
        key = cp.api_key()
        r = httpx.get(cp.url + "/api/v1/rollouts", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert "authentication is OFF" not in cp.log_text()
    finally:
        cp.stop()

    open_cp = ControlPlaneProc(tmp_path / "insecure", mqtt_port, insecure=True)
    open_cp.start()
    try:
        assert "WARNING: operator API authentication is OFF" in open_cp.log_text()
        r = httpx.post(open_cp.url + "/api/v1/security/keys", json={"name": "ci", "role": "viewer"})
        assert r.status_code in (200, 201), r.text
        entries = httpx.get(open_cp.url + "/api/v1/audit", params={"actor": "local"}).json()
        assert any(e["target"] == "/api/v1/security/keys" for e in entries), entries
        # the change itself, before -> after, is recorded with the actor `local` too
        (created,) = [e for e in entries if e["action"] == "apikey.create"]
        assert created["target"] == "ci" and created["detail"]["before"] is None
        assert created["detail"]["after"]["role"] == "viewer"
    finally:
        open_cp.stop()
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "audit", "-c", str(open_cp.workdir / "cp.toml"),
         "--target", "/api/v1/security/keys", "--json"],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["target"] == "/api/v1/security/keys" for r in rows)
    assert {r["actor"] for r in rows} == {"local"}
    text = subprocess.run(
        [sys.executable, "-m", "farmiq", "audit", "-c", str(open_cp.workdir / "cp.toml"),
         "--target", "ci"],
        env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert "apikey.create" in text.stdout and "None -> {" in text.stdout, text.stdout
