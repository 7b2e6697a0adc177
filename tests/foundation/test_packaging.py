"""The gateway stays light: the `edge` extra and the edge modules never pull cloud packages."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CLOUD_ONLY = {"mlflow", "feast", "evidently", "pandas", "scikit-learn", "sklearn", "tensorflow"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull, walked through installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _norm(req.name)
        extras = set(req.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            sub = Requirement(r)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in (extras or {""})
            ):
                todo.append(sub)
    return {k.split("[")[0] for k in seen}


def test_edge_extra_does_not_pull_cloud_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = project["optional-dependencies"]["edge"] + project["dependencies"]
    pulled = _closure(edge)
    assert "onnxruntime" in pulled and "paho-mqtt" in pulled  # the walk works
    assert not (pulled & {_norm(n) for n in CLOUD_ONLY}), sorted(pulled & CLOUD_ONLY)


def test_importing_every_edge_module_leaves_cloud_packages_out():
    code = """
import importlib, pkgutil, sys
import edge_agent, firmware_bridge, farmiq
import provisioning.enroll_client  # the gateway side of provisioning
for pkg in (edge_agent, firmware_bridge, farmiq):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith("__main__") or ".mcu_reference" in m.name:
            continue
        importlib.import_module(m.name)
heavy = {"mlflow", "feast", "evidently", "pandas", "sklearn", "tensorflow", "fastapi", "sqlalchemy"}
bad = sorted({n.split(".")[0] for n in sys.modules} & heavy)
print("BAD", bad)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BAD []" in out.stdout, out.stdout
