"""Helpers for gateway robustness tests: a tiny model whose answer names its version, bundles
signed with the test control plane's key, and a gateway wrapper that talks over the broker."""

from __future__ import annotations

import json
from typing import Any

from farmiq import topics
from farmiq.bundle.builder import build_bundle
from farmiq.bundle.signing import Signer
from tests.security.helpers import Listener, scale_model
from tests.support.procs import AgentProc

NAME = "barn"


def make_bundle(signer: Signer, version: int, **kw: Any) -> bytes:
    """``barn`` v``version``: y = version * x, so the answer says which version serves."""
    return build_bundle(
        scale_model(float(version)),
        name=NAME,
        version=version,
        signers=[signer],
        task="regression",
        **kw,
    )


class Gateway:
    """A running agent plus a listener on everything it publishes."""

    def __init__(self, agent: AgentProc, listener: Listener, signer: Signer) -> None:
        self.agent = agent
        self.listener = listener
        self.signer = signer
        self.id = agent.device_id
        self.install_topic = topics.up(self.id, topics.INSTALL_ACK)

    def push(self, bundle: bytes, timeout: float = 30) -> dict[str, Any]:
        seen = len(self.listener.on(self.install_topic))
        self.listener.publish(topics.down(self.id, topics.BUNDLE), bundle)
        raw = self.listener.wait_new(self.install_topic, seen, timeout)
        return json.loads(raw)  # type: ignore[no-any-return]

    def answer(self) -> float:
        r = self.agent.post("/api/v1/inference", {"model": NAME, "inputs": [[1.0, 1.0]]})
        assert r.status_code == 200, r.text
        return float(r.json()["outputs"]["y"][0][0])

    def assert_alive(self, when: str) -> None:
        """The process runs, answers /health, and the installed model still serves."""
        assert self.agent.proc is not None and self.agent.proc.poll() is None, (
            f"agent died {when}: {self.agent.log_text()[-4000:]}"
        )
        assert self.agent.get("/health").status_code == 200, when
        assert self.answer() == float(self.agent.installed_version(NAME) or 0), when

    def close(self) -> None:
        self.listener.close()
