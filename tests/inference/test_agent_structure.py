"""The agent's structure holds: no import circle between its modules (TYPE_CHECKING
imports included), and no part imports the composition root (edge_agent/agent.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "edge_agent"


def _graph() -> dict[str, set[str]]:
    mods: dict[str, set[str]] = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = mods.setdefault(name, set())
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_agent"):
                deps.add(str(node.module))
    return mods


def test_no_import_circle_and_only_the_cli_imports_the_agent() -> None:
    g = _graph()
    assert "edge_agent.inference.policy" in g and "edge_agent.models.install_service" in g
    importers = sorted(m for m, deps in g.items() if "edge_agent.agent" in deps)
    assert importers == ["edge_agent.cli"]
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in g[m]:
            if d not in g:
                continue
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])
    assert cycles == []
