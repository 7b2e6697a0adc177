"""systemd's notify protocol: READY, WATCHDOG, STATUS, RELOADING, STOPPING.

Our own ~30 lines instead of a dependency: the protocol is one datagram of newline-
separated ``KEY=VALUE`` lines sent to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a
path, or an abstract socket when it starts with ``@``). The PyPI wrappers (sdnotify,
systemd-python) add a package, or a C build against libsystemd, for exactly this. Outside
systemd (no ``$NOTIFY_SOCKET``) every call is a cheap no-op, and a send that fails is
logged once and never raised: notification must never take the agent down.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class SdNotifier:
    def __init__(self, address: str | None = None, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = address if address is not None else env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # Linux abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        self._sock: socket.socket | None = None
        self._warned = False
        self.watchdog_usec = _watchdog_usec(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WatchdogSec (sd_watchdog_enabled(3))."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                )
            # Non-blocking: a datagram socket whose reader is behind (its queue holds only
            # net.unix.max_dgram_qlen messages) would otherwise block the event loop. A ping
            # that cannot be queued now is dropped; the next one follows within the interval.
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if not self._warned:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text.replace(chr(10), ' ')}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to us.
        return self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: os._Environ[str] | dict[str, str]) -> int | None:
    """WATCHDOG_USEC, honoured only when WATCHDOG_PID is unset or names this process."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec if usec > 0 else None
