"""Simulators stay out of the gateway: firmware_bridge never needs farmiq_sim or tflite-micro,
and the gateway's install (the ``edge`` extra) does not pull tflite-micro."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_edge_extra_has_no_simulator_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    edge = " ".join(extras["edge"] + project["dependencies"])
    assert "tflite-micro" not in edge and "tflite-micro" in " ".join(extras["sim"])
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(p.startswith("farmiq_sim") for p in packages["packages"]["find"]["include"])


def test_the_bridge_runs_without_the_simulator_package() -> None:
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("farmiq_sim", "tflite_micro"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import firmware_bridge
for m in pkgutil.walk_packages(firmware_bridge.__path__, "firmware_bridge."):
    importlib.import_module(m.name)
from farmiq.cli import build_parser
p = build_parser()
args = p.parse_args(["mcu", "probe", "/dev/null"])  # probe is there, simulate is not
try:
    p.parse_args(["mcu", "simulate"])
except SystemExit:
    print("NO-SIMULATE")
print("OK", sorted(n for n in sys.modules if n.startswith(("farmiq_sim", "tflite_micro"))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "NO-SIMULATE" in r.stdout and "OK []" in r.stdout, r.stdout + r.stderr[-500:]
