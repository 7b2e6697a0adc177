"""systemd/farmiq-agent.service, checked by systemd's own tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "farmiq-agent.service"


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "systemd"],
            check=False,
            capture_output=True,
            timeout=300,
        )
        exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is required (apt-get install systemd)")
    return exe


def _unit() -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(section, {}).setdefault(key, []).append(value)
    return out


def _verifiable(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's farmiq (verify checks the binary)."""
    exe = Path(sys.executable).parent / "farmiq"
    text = UNIT.read_text().replace("/opt/farmiq/venv/bin/farmiq", str(exe))
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


def test_unit_passes_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [systemd_analyze, "verify", str(_verifiable(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in out.stderr.splitlines() if UNIT.name in line]
    assert out.returncode == 0 and not problems, out.stderr


def test_verify_catches_a_broken_unit(systemd_analyze: str, tmp_path: Path) -> None:
    # The check above can fail: a misspelt directive is reported.
    path = _verifiable(tmp_path)
    path.write_text(path.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    out = subprocess.run(
        [systemd_analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    assert "WatchdogSecs" in out.stderr


def test_unit_is_notify_with_watchdog_restart_and_hardening() -> None:
    svc = _unit()["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    # A bad set-up (the agent's preflight) is not restarted in a loop.
    from edge_agent.daemon.preflight import SETUP_EXIT_CODE

    assert str(SETUP_EXIT_CODE) in one["RestartPreventExitStatus"].split()
    assert int(one["WatchdogSec"].rstrip("s")) >= 10
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The agent's graceful stop (10 s HTTP drain + 5 s outbox + 5 s per step) fits the stop timeout.
    from edge_agent.daemon.lifecycle import HTTP_DRAIN_S, OUTBOX_FLUSH_S, STEP_TIMEOUT_S

    assert (
        int(one["TimeoutStopSec"].rstrip("s")) > HTTP_DRAIN_S + OUTBOX_FLUSH_S + 2 * STEP_TIMEOUT_S
    )
    assert one["User"] == "farmiq" and one["SupplementaryGroups"] == "dialout"
    assert one["NoNewPrivileges"] == "yes" and one["ProtectSystem"] == "strict"
    assert one["PrivateTmp"] == "yes" and one["ReadWritePaths"] == "/var/lib/farmiq"
    assert "--config /etc/farmiq/agent.toml" in one["ExecStart"]
    assert one["StateDirectory"] == "farmiq" and one["ConfigurationDirectory"] == "farmiq"


def test_unit_exposure_is_low(systemd_analyze: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", str(_verifiable(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
    assert m, out.stdout[-500:] + out.stderr[-500:]
    assert float(m.group(1)) <= 3.0, out.stdout  # systemd rates up to 3.9 "OK"


def test_sysusers_creates_farmiq_in_dialout(tmp_path: Path, systemd_analyze: str) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.fail("systemd-sysusers is required (apt-get install systemd)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    out = subprocess.run(
        [sysusers, f"--root={root}", str(SYSTEMD / "farmiq.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    passwd = (root / "etc" / "passwd").read_text()
    group = (root / "etc" / "group").read_text()
    assert re.search(
        r"^farmiq:x:\d+:\d+:FarmIQ Edge agent:/var/lib/farmiq:/usr/sbin/nologin$", passwd, re.M
    )
    assert re.search(r"^dialout:x:20:farmiq$", group, re.M)


def test_tmpfiles_and_example_config_match_the_unit() -> None:
    tmpfiles = (SYSTEMD / "farmiq.tmpfiles.conf").read_text()
    assert re.search(r"^d /var/lib/farmiq\s+0750 farmiq farmiq", tmpfiles, re.M)
    assert re.search(r"^d /etc/farmiq\s+0750 root\s+farmiq", tmpfiles, re.M)
    from edge_agent.config import AgentConfig, load_agent_config

    cfg = load_agent_config(SYSTEMD / "agent.toml.example")
    assert isinstance(cfg, AgentConfig)
    assert str(cfg.state_dir) == "/var/lib/farmiq" and str(cfg.trust_root).startswith(
        "/etc/farmiq/"
    )
