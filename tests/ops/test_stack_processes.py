"""`farmiq stack down` stops exactly what `up` started: a pid file names a process only
while that pid still runs the recorded command, and two workdirs never see each other's."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from farmiq_sim.stack.processes import ProcessTable
from farmiq_sim.stack.stack import StackError, StackInfo, down


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError as exc:
        return f"pid {pid}: {exc}"
    return f"pid {pid}: stat {stat!r}, cmdline {cmdline!r}"


def test_stop_signals_only_the_recorded_process_group(tmp_path: Path) -> None:
    a, b = ProcessTable(tmp_path / "a"), ProcessTable(tmp_path / "b")
    started = a.spawn("sleeper", ["sleep", "30"])
    child = subprocess.Popen(["sleep", "30"])  # someone else's process
    try:
        assert a.names() == ["sleeper"] and b.names() == []
        assert not b.stop("sleeper")  # another workdir's table knows nothing of it
        # A pid file whose pid now runs another command (pid reuse) is never signalled.
        (tmp_path / "a" / "run" / "other.pid").write_text(
            json.dumps({"pid": child.pid, "argv": ["mosquitto", "-c", "x.conf"]})
        )
        assert ProcessTable(tmp_path / "a").stop("other") is False
        assert child.poll() is None
        # A fresh table (as `farmiq stack down` is) finds and stops the real one.
        seen = _proc_state(
            started.pid
        )  # said if it fails (once in CI: pid reuse on a busy machine?)
        assert ProcessTable(tmp_path / "a").stop("sleeper", timeout=5), seen
        deadline = time.time() + 5
        while _running(started.pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not _running(started.pid)
        assert a.names() == []
    finally:
        child.kill()
        child.wait()


def test_down_without_a_stack_is_one_clear_error(tmp_path: Path) -> None:
    try:
        down(tmp_path / "nothing")
    except StackError as exc:
        assert "no stack in" in str(exc)
    else:
        raise AssertionError("down found a stack where there is none")
    try:
        StackInfo.load(tmp_path)
    except StackError as exc:
        assert "stack.json" in str(exc)
