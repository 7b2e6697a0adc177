"""The Prometheus rules and the Grafana dashboard in deploy/ are valid (promtool) and name
only metrics the daemons really export: a live control plane and a live agent are scraped
and every metric a rule or a panel queries must be among theirs; both export process
metrics (memory, CPU, open files)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.procs import ControlPlaneProc

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "farmiq-rules.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "farmiq-edge.json"
NAME = re.compile(r"\b((?:farmiq_(?:cp|agent)|process)_[a-z0-9_]+)")
PROCESS = {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"}


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is required (Debian package prometheus; scripts/test.sh installs it)")
    return exe


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", str(SCRAPE)]):
        out = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
    assert (
        "SUCCESS"
        in subprocess.run(
            [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
        ).stdout
    )


def _queried() -> dict[str, set[str]]:
    """Metric names per asset (histogram series names folded to the family)."""
    rules = yaml.safe_load(RULES.read_text())
    exprs = {"rules": [r["expr"] for g in rules["groups"] for r in g["rules"]]}
    dash = json.loads(DASHBOARD.read_text())
    exprs["dashboard"] = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    out: dict[str, set[str]] = {}
    for asset, texts in exprs.items():
        names = {n for e in texts for n in NAME.findall(e)}
        out[asset] = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
    return out


def _exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "counter":
                names.add(m.group(1) + "_total")
        elif line and not line.startswith("#"):
            names.add(re.sub(r"_(bucket|count|sum|created)$", "", re.split(r"[{ ]", line)[0]))
    return names


def test_rules_and_dashboard_query_metrics_the_daemons_export(
    control_plane: ControlPlaneProc, agent_factory: Any, ops_trust: dict[str, Any]
) -> None:
    cp_names = _exported(httpx.get(control_plane.url + "/metrics", timeout=30).text)
    agent = agent_factory("gw-monitoring-assets", ops_trust)
    agent_names = _exported(agent.get("/metrics").text)
    assert cp_names >= PROCESS and agent_names >= PROCESS  # RSS, CPU, open files on both
    assert "process_max_fds" in cp_names
    for asset, names in _queried().items():
        cp_wanted = {n for n in names if n.startswith("farmiq_cp_")}
        agent_wanted = {n for n in names if n.startswith("farmiq_agent_")}
        assert cp_wanted and agent_wanted, asset  # both daemons are covered
        assert cp_wanted - cp_names == set(), f"{asset}: not exported by the control plane"
        assert agent_wanted - agent_names == set(), f"{asset}: not exported by the agent"
        proc = {n for n in names if n.startswith("process_")}
        assert proc - (cp_names & agent_names) == set(), asset


def test_a_name_that_no_daemon_exports_is_caught() -> None:
    text = '# TYPE farmiq_cp_devices gauge\nfarmiq_cp_devices{status="online"} 1\n'
    assert "farmiq_cp_devices" in _exported(text)
    assert "farmiq_cp_devicez" not in _exported(text)
