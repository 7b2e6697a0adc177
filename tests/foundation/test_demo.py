"""`farmiq demo` runs the whole system and says what happened, in a few readable lines."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("extra", [[], ["--embedded-broker"]], ids=["mosquitto", "embedded-broker"])
def test_demo_end_to_end(tmp_path, extra):
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "demo", "--workdir", str(tmp_path / "demo"), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [ln[:5] for ln in lines[:7]] == [f"[{i}/7]" for i in range(1, 8)], out.stdout
    assert "registered in MLflow and promoted to @production" in out.stdout
    assert "verified and installed on barn-01" in out.stdout
    assert "equals onnxruntime" in out.stdout
    if extra:
        assert "embedded broker" in lines[0]
