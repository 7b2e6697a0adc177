"""What the router needs from a target that is not this process (cloud, serverless, MCU)."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

ErrorKind = Literal["link", "model", "unavailable"]


class TargetError(RuntimeError):
    """A target could not answer. ``kind`` says whose fault: "link" (timeout, refused
    connection, server down: counts against the circuit breaker), "model" (the server
    answered with an error about this request or model: the link is fine), "unavailable"
    (the target is not configured or holds no such model)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class RemoteTarget(Protocol):
    name: str  # "cloud", "serverless", "mcu"
    cost: float  # relative cost per request (edge and MCU are 0: free and private)
    cold_start_ms: float  # extra latency expected on the first call

    def configured(self) -> bool: ...

    def holds(self, model: str) -> bool: ...

    async def infer(
        self,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
    ) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...
