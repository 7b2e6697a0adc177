"""The MCU as an inference target, through firmware_bridge's ``MCUManager``.

The manager knows which attached MCU holds which model (``has_model``) and runs it
(``infer(device_id, model_id, rows)``). With no manager (no MCU ports configured) or no
MCU holding the model, the target says "unavailable" and the router moves on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from edge_agent.inference.targets.remote_target import TargetError


class McuTarget:
    name = "mcu"
    cost = 0.0
    cold_start_ms = 0.0

    def __init__(self, manager: Callable[[], Any] | Any = None) -> None:
        # A callable lets the agent attach its manager after the router exists.
        self._manager = manager

    def manager(self) -> Any:
        m = self._manager
        if callable(m) and not hasattr(m, "has_model"):
            return m()
        return m

    def configured(self) -> bool:
        return self.manager() is not None

    def holds(self, model: str) -> bool:
        mgr = self.manager()
        if mgr is None:
            return False
        try:
            return mgr.has_model(model) is not None
        except Exception:
            return False

    async def infer(
        self,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
    ) -> dict[str, np.ndarray]:
        mgr = self.manager()
        if mgr is None:
            raise TargetError("unavailable", "mcu: no MCU manager on this gateway")
        device = mgr.has_model(model)
        if device is None:
            raise TargetError("unavailable", f"mcu: no attached MCU holds {model!r}")
        if len(inputs) != 1:
            raise TargetError("model", "mcu: MCU models take exactly one input tensor")
        x = next(iter(inputs.values()))
        try:
            y = await mgr.infer(device, model, x, timeout=timeout_s)
        except TimeoutError as exc:
            raise TargetError("link", f"mcu {device}: {exc or 'timed out'}") from None
        except ValueError as exc:
            raise TargetError("model", f"mcu {device}: {exc}") from None
        except Exception as exc:  # InferenceError and link errors of firmware_bridge
            kind: Literal["link", "model"] = (
                "link"
                if "Link" in type(exc).__name__ or "Unavailable" in type(exc).__name__
                else "model"
            )
            raise TargetError(kind, f"mcu {device}: {type(exc).__name__}: {exc}") from None
        y = np.asarray(y, dtype=np.float32)
        if y.ndim == 1:
            y = y.reshape(x.shape[0], -1)
        return {outputs[0] if outputs else "output": y}

    async def close(self) -> None:
        return None
