"""The runtime interface every inference target implements."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot serve now (library missing, device unplugged, link down)."""


class Runtime(Protocol):
    """A loaded model on one runtime. ``run`` takes and returns named arrays."""

    kind: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...
