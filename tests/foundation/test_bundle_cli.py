"""`farmiq bundle build|sign|verify|inspect` from the command line."""

from __future__ import annotations

import json
import subprocess
import sys


def farmiq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmiq", *args], capture_output=True, text=True, timeout=120
    )


def test_build_verify_inspect_and_tamper(tmp_path, barn_model):
    model = tmp_path / "m.onnx"
    model.write_bytes(barn_model.onnx_bytes)
    key, trust, out = tmp_path / "k.pem", tmp_path / "trust.json", tmp_path / "b.fqb"
    assert farmiq("bundle", "keygen", "--key", str(key), "--trust", str(trust)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    r = farmiq(
        "bundle",
        "build",
        str(model),
        "--name",
        "barn",
        "--version",
        "3",
        "--key",
        str(key),
        "--labels",
        "off,low,high",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    r = farmiq("bundle", "verify", str(out), "--trust", str(trust))
    assert r.returncode == 0 and "OK barn v3" in r.stdout, r.stderr
    info = json.loads(farmiq("bundle", "inspect", str(out)).stdout)
    assert info["manifest"]["inputs"][0]["shape"] == [None, 4]
    assert info["manifest"]["labels"] == ["off", "low", "high"]

    # older than installed: refused with a reason
    r = farmiq("bundle", "verify", str(out), "--trust", str(trust), "--installed-version", "4")
    assert r.returncode == 1 and "rollback" in r.stderr

    # flip one byte inside the model member
    data = bytearray(out.read_bytes())
    idx = data.find(barn_model.onnx_bytes[-40:])
    data[idx + 5] ^= 0xFF
    bad = tmp_path / "bad.fqb"
    bad.write_bytes(bytes(data))
    r = farmiq("bundle", "verify", str(bad), "--trust", str(trust))
    assert r.returncode == 1 and "REJECTED (hash)" in r.stderr

    # signed by a key the trust root does not list
    other = tmp_path / "other.pem"
    farmiq("bundle", "keygen", "--key", str(other))
    r = farmiq(
        "bundle",
        "build",
        str(model),
        "--name",
        "barn",
        "--version",
        "3",
        "--key",
        str(other),
        "-o",
        str(bad),
    )
    r = farmiq("bundle", "verify", str(bad), "--trust", str(trust))
    assert r.returncode == 1 and "untrusted-key" in r.stderr

    # not a bundle at all
    (tmp_path / "junk.fqb").write_bytes(b"\x00" * 1000 + b"garbage")
    r = farmiq("bundle", "verify", str(tmp_path / "junk.fqb"), "--trust", str(trust))
    assert r.returncode == 1 and "REJECTED" in r.stderr
