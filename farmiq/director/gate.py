"""The gateway side's single call before a signed leaf's handler runs.

``DirectorGate.open(leaf, payload)`` returns the body to hand to the existing handler, or
``None`` when the document is refused. A refusal is logged, counted (``refused``, exported
as a metric by the agent) and reported on ``up/director``::

    {"ok": false, "leaf": "actuator", "code": "expired", "reason": "...", "counter": 17,
     "device_id": "gw-1", "ts": 1764150000.0}

Leaves other than ``SIGNED_LEAVES`` pass through untouched (bundles and root rotations
carry their own signatures; chunks are checked against hashes from the signed desired
state). A duplicate of the last accepted document is handed on only for retained leaves,
whose handlers are idempotent (``down/desired``, ``down/features``); a duplicated command
or ack is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from farmiq import topics
from farmiq.director.envelope import SIGNED_LEAVES
from farmiq.director.state_file import load_state, save_state
from farmiq.director.verifier import DirectorRefused, DirectorVerifier

log = logging.getLogger(__name__)

REPORT_LEAF = "director"
RETAINED_LEAVES = frozenset({topics.DESIRED, topics.FEATURES})

Publish = Callable[[str, bytes], Awaitable[None]]  # (up leaf, payload)


class DirectorGate:
    def __init__(
        self,
        verifier: DirectorVerifier,
        state_path: Path,
        publish: Publish,
        trust: Callable[[], Any] | None = None,
    ) -> None:
        self.verifier = verifier
        self.state_path = state_path
        self.publish = publish
        # The current trust root, read at each document: a root rotation (down/trust) or a
        # reload that replaces it changes the director keys at once.
        self._trust = trust
        self._trust_seen = trust() if trust is not None else None
        self.refused: Counter[tuple[str, str]] = Counter()  # (leaf, code) -> count
        self.last_refusal: dict[str, object] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_device(
        cls, device_id: str, trust: Callable[[], Any], state_dir: Path, publish: Publish
    ) -> DirectorGate:
        path = state_dir / "director.json"
        verifier = DirectorVerifier.from_trust(device_id, trust(), load_state(path))
        return cls(verifier, path, publish, trust)

    async def open(self, leaf: str, payload: bytes) -> bytes | None:
        if leaf not in SIGNED_LEAVES:
            return payload
        if not payload:  # a retained message being cleared: no instruction, nothing to report
            return None
        if self._trust is not None:
            current = self._trust()
            if current is not self._trust_seen:
                self.verifier.update_trust(current)
                self._trust_seen = current
        async with self._lock:  # counters advance in the order documents are checked
            try:
                # in a thread: the daemon's signature check runs in a child process
                opened = await asyncio.to_thread(self.verifier.open, leaf, payload)
            except DirectorRefused as exc:
                await self._refuse(leaf, exc)
                return None
            if opened.duplicate:
                return opened.body if leaf in RETAINED_LEAVES else None
            try:
                await asyncio.to_thread(save_state, self.state_path, self.verifier.state())
            except OSError as exc:  # act anyway: the counter is held in memory
                log.error("cannot persist director counters: %s", exc)
            return opened.body

    async def _refuse(self, leaf: str, exc: DirectorRefused) -> None:
        self.refused[(leaf, exc.code)] += 1
        log.warning("refused down/%s: %s", leaf, exc, extra={"code": exc.code})
        report: dict[str, object] = {
            "ok": False,
            "leaf": leaf,
            "code": exc.code,
            "reason": exc.reason,
            "counter": exc.counter,
            "device_id": self.verifier.device_id,
            "ts": time.time(),
        }
        self.last_refusal = report
        try:
            await self.publish(REPORT_LEAF, orjson.dumps(report))
        except Exception as e:  # offline: the log and the metric keep it
            log.debug("director report not sent: %s", e)

    def metric_families(self) -> Iterator[Any]:
        """``farmiq_director_refused_total{leaf, code}`` for the agent's /metrics."""
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily(
            "farmiq_director_refused",
            "Signed control-plane documents refused, by leaf and reason code",
            labels=["leaf", "code"],
        )
        for (leaf, code), n in sorted(self.refused.items()):
            fam.add_metric([leaf, code], n)
        yield fam
