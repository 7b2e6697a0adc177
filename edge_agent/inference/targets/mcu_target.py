"""The MCU as an inference target, through firmware_bridge's ``MCUManager`` (given to it
directly by the composition root; None when the gateway has no MCU ports).

The manager knows which attached MCU holds which model (``has_model``) and runs it
(``infer(device_id, model_id, rows)``). With no manager or no MCU holding the model, the
target says "unavailable" and the router moves on.

Errors are sorted by type, not by name: a link failure (firmware_bridge's ``LinkError``
family: NACK, link timeout, link down; an MCU that is unplugged or resetting; no answer
within the deadline) trips the circuit breaker; the MCU answering that it could not run
the model (``InferenceError``) or refusing the input (``ValueError``) does not.

Each request waits at most ``deadline_s`` (``inference.mcu_deadline_ms``, 250 ms by
default) or what the router leaves of the latency budget, whichever is less: a hung MCU
costs at most that, then the router falls back to the next target.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from edge_agent.inference.targets.remote_target import ErrorKind, TargetError


def _model_errors() -> tuple[type[BaseException], ...]:
    """The MCU answered: the model or the input is at fault, the link is fine. Everything
    else (``LinkError``: NACK, link timeout, link down; ``DeviceUnavailable``; a reset;
    anything unexpected) counts against the link."""
    from firmware_bridge.manager import InferenceError

    return (InferenceError, ValueError)


class McuTarget:
    name = "mcu"
    cost = 0.0
    cold_start_ms = 0.0

    def __init__(self, manager: Any | None, *, deadline_s: float = 0.25) -> None:
        self.manager = manager
        self.deadline_s = deadline_s
        self._model_errors = _model_errors() if manager is not None else ()

    def configured(self) -> bool:
        return self.manager is not None

    def holds(self, model: str) -> bool:
        if self.manager is None:
            return False
        try:
            return self.manager.has_model(model) is not None
        except Exception:
            return False

    def classify(self, exc: BaseException) -> ErrorKind:
        if isinstance(exc, self._model_errors):
            return "model"
        return "link"

    async def infer(
        self,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
    ) -> dict[str, np.ndarray]:
        mgr = self.manager
        if mgr is None:
            raise TargetError("unavailable", "mcu: no MCU manager on this gateway")
        device = mgr.has_model(model)
        if device is None:
            raise TargetError("unavailable", f"mcu: no attached MCU holds {model!r}")
        if len(inputs) != 1:
            raise TargetError("model", "mcu: MCU models take exactly one input tensor")
        x = next(iter(inputs.values()))
        wait = min(timeout_s, self.deadline_s)
        try:
            # the manager retries inside its own deadline; wait_for bounds a hung call too
            y = await asyncio.wait_for(mgr.infer(device, model, x, timeout=wait), wait)
        except TimeoutError:
            raise TargetError(
                "link", f"mcu {device}: no answer within {wait * 1000:.0f} ms"
            ) from None
        except Exception as exc:
            kind = self.classify(exc)
            raise TargetError(kind, f"mcu {device}: {type(exc).__name__}: {exc}") from None
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1:
            y = y.reshape(x.shape[0], -1)
        return {outputs[0] if outputs else "output": y}

    async def close(self) -> None:
        return None
