"""Processes the stack starts: one pid file each under ``<workdir>/run``, one log each
under ``<workdir>/logs``, so ``farmiq stack down`` stops exactly what ``up`` started.

A pid file records the pid and the command line. ``stop`` signals the process group
(tritonserver's python stubs, mosquitto's children) only while /proc still shows that same
command for that pid, so a pid the kernel has since reused for someone else's process is
never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


@dataclass(frozen=True)
class Started:
    name: str
    pid: int
    log: Path


class ProcessTable:
    def __init__(self, workdir: Path) -> None:
        self.run = workdir / "run"
        self.logs = workdir / "logs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Started:
        self.run.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: `down` stops its children too
            )
        self._children[name] = proc
        record = {"pid": proc.pid, "argv": argv, "started": time.time()}
        self.pidfile(name).write_text(json.dumps(record))
        return Started(name, proc.pid, log)

    def record(self, name: str) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.pidfile(name).read_text()))
        except (OSError, ValueError):
            return None

    def names(self) -> list[str]:
        if not self.run.exists():
            return []
        return sorted(p.stem for p in self.run.glob("*.pid"))

    def exit_code(self, name: str) -> int | None:
        """The exit status of a child this process started and that has ended, else None."""
        proc = self._children.get(name)
        return None if proc is None else proc.poll()

    def alive(self, name: str) -> bool:
        proc = self._children.get(name)
        if proc is not None:  # our own child: its status is exact
            return proc.poll() is None
        rec = self.record(name)
        return rec is not None and _is_ours(int(str(rec["pid"])), list(rec["argv"]))  # type: ignore[call-overload]

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> bool:
        """Stop ``name`` (its process group) if it is still the process we started."""
        rec = self.record(name)
        if rec is None:
            return False
        pid = int(str(rec["pid"]))
        argv = list(rec["argv"])  # type: ignore[call-overload]
        stopped = False
        if _is_ours(pid, argv):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.time() + timeout
            while _is_ours(pid, argv) and time.time() < deadline:
                time.sleep(0.1)
            if _is_ours(pid, argv):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped = True
        self.pidfile(name).unlink(missing_ok=True)
        return stopped

    def kill(self, name: str) -> bool:
        """SIGKILL (a crash), leaving the pid file for ``status`` to report it dead."""
        rec = self.record(name)
        if rec is None or not _is_ours(int(str(rec["pid"])), list(rec["argv"])):  # type: ignore[call-overload]
            return False
        os.kill(int(str(rec["pid"])), signal.SIGKILL)
        return True


def _is_ours(pid: int, argv: list[str]) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is gone for every purpose
        return False
    # Wrappers may exec the real binary (bao): match on the arguments after argv[0].
    got = [c.decode(errors="replace") for c in cmdline if c]
    return got[1:] == argv[1:] or got == argv


def _exited(table: ProcessTable, name: str, what: str) -> str:
    log = table.logs / f"{name}.log"
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    rec = table.record(name) or {}
    code = table.exit_code(name)
    how = f"exit status {code}" if code is not None else "no longer running"
    try:
        cmdline = Path(f"/proc/{rec.get('pid')}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
        how += f"; its pid now runs {cmdline.decode(errors='replace')!r}"
    except OSError:
        pass
    return f"{what} exited during start-up ({how}); its log ends:\n{tail}"


def wait_http(url: str, timeout: float, *, what: str, table: ProcessTable, name: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not table.alive(name):
            raise RuntimeError(_exited(table, name, what))
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f}s")


def wait_port(port: int, timeout: float, *, what: str, table: ProcessTable, name: str) -> None:
    deadline = time.time() + timeout
    while not port_open("127.0.0.1", port):
        if not table.alive(name):
            raise RuntimeError(_exited(table, name, what))
        if time.time() > deadline:
            raise TimeoutError(f"{what} did not open port {port} within {timeout:.0f}s")
        time.sleep(0.05)
