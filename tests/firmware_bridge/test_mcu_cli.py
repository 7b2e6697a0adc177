"""`farmiq mcu simulate` and `farmiq mcu probe` as a person would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

FARMIQ = [sys.executable, "-m", "farmiq.cli"]


def test_simulate_then_probe(tmp_path: Path) -> None:
    link = tmp_path / "barn-mcu"
    sim = subprocess.Popen(
        [*FARMIQ, "mcu", "simulate", "--device-id", "cli-barn", "--interval", "0.1",
         "--link", str(link), "--faults", "garbage=0.1,drop=0.05"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        assert sim.stdout.readline().strip() == str(link)
        probe = subprocess.run(
            [*FARMIQ, "mcu", "probe", str(link), "--readings", "5", "--timeout", "15"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr
        assert "device cli-barn" in probe.stdout
        assert "READINGS" in probe.stdout and "INFER" in probe.stdout
        assert probe.stdout.count("\n  #") == 5
    finally:
        sim.send_signal(signal.SIGINT)
        assert sim.wait(10) == 0
    assert not link.exists()


def test_bad_fault_spec_is_a_clear_error() -> None:
    r = subprocess.run(
        [*FARMIQ, "mcu", "simulate", "--faults", "meteor=1"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "unknown fault 'meteor'" in r.stderr


def test_out_of_range_fault_values_are_refused_in_one_line() -> None:
    cases = {
        "garbage=1.5": "garbage=1.5: a probability must be between 0 and 1",
        "reset_after_chunks=-1": "reset_after_chunks=-1: must be 0 (off) or a positive number",
        "drop=nan": "drop=nan: a probability",
        "slow_bps=fast": "slow_bps='fast': expected an integer",
    }
    for spec, message in cases.items():
        r = subprocess.run(
            [*FARMIQ, "mcu", "simulate", "--faults", spec], capture_output=True, text=True
        )
        assert r.returncode == 2, spec
        assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_probe_of_a_silent_port_fails_cleanly(tmp_path: Path) -> None:
    r = subprocess.run(
        [*FARMIQ, "mcu", "probe", str(tmp_path / "nothing"), "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1 and "no MCU answered" in r.stderr
