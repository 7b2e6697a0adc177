"""Each side installs what it uses and nothing of the other side's.

The gateway stays light: the `edge` extra and the edge modules never pull cloud packages.
The `control` extra does not pull the `edge` extra's gateway-only packages, and provides
every package the control plane imports; `sim` provides what farmiq_sim imports; `all` is
every extra.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CLOUD_ONLY = {"mlflow", "feast", "evidently", "pandas", "scikit-learn", "sklearn", "tensorflow"}
# In the `edge` extra for the gateway alone: the control plane must not install them.
# ai-edge-litert is not here: the registration gate runs LiteRT models in the cloud too.
GATEWAY_ONLY = {"pyserial", "cobs", "river"}
# Imports under control_plane/ that another extra provides (module -> extra).
CONTROL_PLANE_OPTIONAL = {
    "amqtt": "sim",  # the demo's embedded broker (on its way to farmiq_sim/)
}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]


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


def _requirements(extra: str) -> list[str]:
    """The core dependencies and an extra's, with this project's own extras expanded from
    pyproject.toml (the installed metadata may be of another checkout)."""
    out = list(PROJECT["dependencies"])
    todo = [extra]
    done: set[str] = set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        for r in EXTRAS[name]:
            req = Requirement(r)
            if _norm(req.name) == _norm(PROJECT["name"]):
                todo.extend(req.extras)
            else:
                out.append(r)
    return out


def _third_party_imports(*roots: str) -> dict[str, str]:
    """Top-level module -> one file importing it, for everything outside the stdlib and ours."""
    ours = {"farmiq", "farmiq_sim", "edge_agent", "firmware_bridge", "control_plane"}
    ours |= {"provisioning", "tests"}
    found: dict[str, str] = {}
    for root in roots:
        for f in sorted((ROOT / root).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for n in names:
                    top = n.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ours:
                        found.setdefault(top, str(f.relative_to(ROOT)))
    return found


def _unprovided(imports: dict[str, str], pulled: set[str]) -> list[str]:
    dists = metadata.packages_distributions()
    return [
        f"{module} ({where})"
        for module, where in sorted(imports.items())
        if not {_norm(d) for d in dists.get(module, [module])} & pulled
    ]


def test_edge_extra_does_not_pull_cloud_packages():
    pulled = _closure(_requirements("edge"))
    assert "onnxruntime" in pulled and "paho-mqtt" in pulled  # the walk works
    assert not (pulled & {_norm(n) for n in CLOUD_ONLY}), sorted(pulled & CLOUD_ONLY)


def test_a_litert_gateway_installs_no_onnx_runtime():
    """`edge-core` + `edge-litert`: the agent and LiteRT, without ONNX Runtime (78 MB)."""
    pulled = _closure(_requirements("edge-core") + _requirements("edge-litert"))
    assert {"ai-edge-litert", "paho-mqtt", "tuf"} <= pulled  # the walk works
    assert "onnxruntime" not in pulled and not (pulled & {_norm(n) for n in CLOUD_ONLY})
    assert "onnxruntime" in _closure(_requirements("edge"))


def test_control_extra_has_what_the_control_plane_imports_and_no_gateway_packages():
    assert not any("[edge" in r.replace(" ", "") for r in EXTRAS["control"])
    pulled = _closure(_requirements("control"))
    assert {"fastapi", "mlflow", "paho-mqtt", "onnxruntime"} <= pulled  # the walk works
    assert not (pulled & GATEWAY_ONLY), sorted(pulled & GATEWAY_ONLY)
    imports = _third_party_imports("control_plane", "provisioning", "farmiq")
    for module, extra in CONTROL_PLANE_OPTIONAL.items():
        if imports.pop(module, None):
            assert _unprovided({module: extra}, _closure(_requirements(extra))) == []
    assert _unprovided(imports, pulled) == []


def test_sim_extra_has_what_the_simulators_import():
    assert _unprovided(_third_party_imports("farmiq_sim"), _closure(_requirements("sim"))) == []


def test_all_extra_installs_every_extra():
    everything = set(_requirements("all"))
    for extra in EXTRAS:
        assert set(_requirements(extra)) <= everything, extra


def test_importing_every_edge_module_leaves_cloud_packages_out():
    code = """
import importlib, pkgutil, sys
import edge_agent, firmware_bridge, farmiq
import provisioning.cli, provisioning.enroll_client  # the gateway side of provisioning
for pkg in (edge_agent, firmware_bridge, farmiq):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith("__main__") or ".mcu_reference" in m.name:
            continue
        importlib.import_module(m.name)
heavy = {"mlflow", "feast", "evidently", "pandas", "sklearn", "tensorflow", "fastapi", "sqlalchemy"}
heavy |= {"control_plane", "farmiq_sim"}
bad = sorted({n.split(".")[0] for n in sys.modules} & heavy)
print("BAD", bad)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BAD []" in out.stdout, out.stdout
