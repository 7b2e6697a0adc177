"""A notify socket whose reader falls behind must never stall the agent's event loop."""

from __future__ import annotations

import socket
import time

from edge_agent.daemon.sd_notify import SdNotifier


def test_notify_to_a_full_socket_returns_at_once(tmp_path):
    path = str(tmp_path / "notify")
    reader = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.bind(path)  # never reads: its queue fills after a handful of datagrams
    try:
        n = SdNotifier(address=path)
        t0 = time.monotonic()
        sent = [n.watchdog() for _ in range(500)]
        assert time.monotonic() - t0 < 1.0
        assert sent[0] is True and sent[-1] is False  # later pings dropped, not blocked on
        reader.recv(100)
        assert n.watchdog() is True  # room again: pings flow
    finally:
        reader.close()
