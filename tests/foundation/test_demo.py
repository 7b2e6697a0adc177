"""`farmiq demo` runs the whole system and says what happened, in a few readable lines.

Two demos started at once on one machine both finish: each has its own folder, its own
broker on a free port and its own gateway name, and authentication is on.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = [sys.executable, "-m", "farmiq", "demo"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path.cwd()))}
    return subprocess.Popen(
        DEMO + args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(480)
def test_two_demos_at_once_both_finish_on_their_own_brokers(tmp_path: Path) -> None:
    # Mosquitto with mutual TLS, and the embedded broker, side by side, in the same folder.
    runs = [_start([], tmp_path), _start(["--embedded-broker"], tmp_path)]
    outs = [p.communicate(timeout=300) for p in runs]
    for p, (out, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, out + err
        lines = out.splitlines()
        assert [ln[:5] for ln in lines[:7]] == [f"[{i}/7]" for i in range(1, 8)], out
        assert "registered in MLflow and promoted to @production" in out
        assert "equals onnxruntime" in out
        assert re.search(r"admin API key: fiq_\S+$", lines[1]), lines[1]  # auth on, key printed
    tls, embedded = (o for o, _ in outs)
    assert "mutual TLS" in tls.splitlines()[0]
    assert "embedded broker" in embedded.splitlines()[0]
    assert "WARNING" in outs[1][1]  # the anonymous broker is warned about
    ports = [re.search(r"127\.0\.0\.1:(\d+)", o.splitlines()[0]).group(1) for o, _ in outs]  # type: ignore[union-attr]
    assert len(set(ports)) == 2 and "1883" not in ports
    devices = [re.search(r"installed on (\S+)", o).group(1) for o, _ in outs]  # type: ignore[union-attr]
    assert devices[0] != devices[1]
    folders = sorted((tmp_path / ".farmiq" / "demo").iterdir())
    assert len([f for f in folders if f.is_dir()]) == 2  # a folder per run
    assert not (tmp_path / "mlartifacts").exists()


def test_a_folder_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    with open(tmp_path / ".demo.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another demo holds it
        p = _start(["--workdir", str(work)], tmp_path)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert err.strip().splitlines() == [
        f"farmiq demo: {work} is in use by another demo; pass another --workdir "
        "(or none: each run then gets its own folder)"
    ]
    assert "Traceback" not in out + err


def test_turning_auth_off_is_an_explicit_flag() -> None:
    out = subprocess.run(
        [*DEMO, "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "--insecure" in out
    assert "turn operator API authentication off" in out  # off only when asked
