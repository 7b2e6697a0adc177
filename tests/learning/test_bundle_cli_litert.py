"""`farmiq bundle build --runtime litert|mcu-tflite` builds from the .tflite alone: specs
from the LiteRT interpreter, the gate run, the bundle verifies; a broken file is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TFLITE = Path(__file__).resolve().parents[2] / "firmware_bridge" / "fixtures" / "tiny_int8.tflite"


def farmiq(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmiq", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("runtime", ["litert", "mcu-tflite"])
def test_a_tflite_bundle_from_the_model_file_alone(tmp_path: Path, runtime: str) -> None:
    key, trust, out = tmp_path / "k.pem", tmp_path / "trust.json", tmp_path / "b.fqb"
    assert farmiq("bundle", "keygen", "--key", key, "--trust", trust).returncode == 0
    p = farmiq(
        "bundle", "build", TFLITE, "--runtime", runtime, "--name", "vent", "--version", "1",
        "--key", key, "-o", out,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert farmiq("bundle", "verify", out, "--trust", trust).returncode == 0
    manifest = json.loads(farmiq("bundle", "inspect", out).stdout)["manifest"]
    assert manifest["runtime"] == runtime and manifest["model_file"] == "model/model.tflite"
    assert manifest["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": [None, 4], "allow_nan": False}
    ]
    assert manifest["outputs"][0]["shape"] == [None, 2]


def test_a_broken_model_file_is_one_clear_line(tmp_path: Path) -> None:
    key, bad = tmp_path / "k.pem", tmp_path / "bad.tflite"
    farmiq("bundle", "keygen", "--key", key)
    bad.write_bytes(b"\0\0\0\0TFL3" + b"\x01" * 60)
    p = farmiq(
        "bundle", "build", bad, "--runtime", "litert", "--name", "vent", "--version", "1",
        "--key", key, "-o", tmp_path / "x.fqb",
    )  # fmt: skip
    assert p.returncode == 1 and "cannot build a litert bundle" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "x.fqb").exists()
