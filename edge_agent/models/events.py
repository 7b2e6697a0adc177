"""The one event source for "the model serving ``name`` changed" (install, rollback, start).

Every swap is announced once, on the event loop, by ``InstallService`` after the worker
thread that swapped the model returned; subscribers (the router's per-model state and
result cache, the drift windows, the MCU loader, the reported state) never run on a worker
thread and never need ``call_soon_threadsafe``. A subscriber is a plain callable; one that
has async work to do starts a task itself. A failing subscriber is logged and the others
still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from edge_agent.models.serving import LoadedModel

log = logging.getLogger(__name__)

Cause = Literal["start", "install", "rollback"]


@dataclass(frozen=True, slots=True)
class ModelSwap:
    name: str
    new: LoadedModel | None  # None: the model is gone
    old: LoadedModel | None  # None: first version on this gateway (or since start)
    cause: Cause


Subscriber = Callable[[ModelSwap], None]


class ModelEvents:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> None:
        self._subscribers.append(fn)

    def emit(self, swap: ModelSwap) -> None:
        for fn in list(self._subscribers):
            try:
                fn(swap)
            except Exception:
                log.exception("model-swap subscriber %r failed", fn)
