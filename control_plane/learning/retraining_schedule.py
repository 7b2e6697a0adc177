"""The retraining decision with no human: taken when drift windows arrive, on a timer, and
as a forced retrain on a schedule.

``RetrainingSchedule`` runs the trigger (control_plane/drift/trigger.py: the policy's
hysteresis and cooldown, then the learning loop) by itself:

- when gateways' drift windows of a model have been stored, after ``settle_s`` (so a
  fleet's burst of windows is judged together, not one gateway at a time);
- every ``every_s`` (a period with no new windows counts for nothing: the policy counts
  only periods with new data);
- with ``retrain_every_s`` for a model, a forced retrain once that long has passed since
  its last trigger, drift or not (the decision says "schedule").

The models judged are those the operator asked to be retrained: an entry in the learning
configuration (control_plane/learning/setup.py) or in ``retrain_every_s``. Each decision
looks at the last ``period_s`` of windows; deciding again on the same
windows is not a new period (the decider's memory), so the cadence can be frequent.
Across control-plane replicas on PostgreSQL one replica at a time decides for a model
(a session advisory lock keyed by the model); on SQLite there is one process.

Site configuration (``FARMIQ_DRIFT_CONFIG``)::

    {"schedule": {"every_s": 300, "period_s": 3600, "settle_s": 5,
                  "retrain_every_s": {"barn-ventilation": 604800}}}
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from control_plane.drift.tables import RetrainingPolicyState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleConfig:
    every_s: float = 300.0
    period_s: float = 3600.0
    settle_s: float = 5.0
    retrain_every_s: dict[str, float] = field(default_factory=dict)
    enabled: bool = True

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None) -> ScheduleConfig:
        doc = dict(doc or {})
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"retraining schedule: unknown keys {sorted(unknown)}")
        cfg = cls(**doc)
        if cfg.every_s <= 0 or cfg.period_s <= 0 or cfg.settle_s < 0:
            raise ValueError("retraining schedule: every_s and period_s > 0, settle_s >= 0")
        if any(v <= 0 for v in cfg.retrain_every_s.values()):
            raise ValueError("retraining schedule: retrain_every_s values must be > 0")
        return cfg


class RetrainingSchedule:
    def __init__(
        self,
        trigger: Any,
        models: Callable[[], list[str]],
        engine: Engine,
        config: ScheduleConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.trigger = trigger
        self.models = models
        self.engine = engine
        self.config = config
        self.clock = clock
        self._dirty: dict[str, float] = {}  # model -> when its first unjudged window came
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._next_sweep = 0.0
        self.decisions = 0

    # -- inputs -------------------------------------------------------------------------
    def windows_stored(self, model: str) -> None:
        """Drift windows of ``model`` were stored: decide after ``settle_s`` (for a model
        that is judged here)."""
        if model not in self.models():
            return
        with self._cv:
            self._dirty.setdefault(model, self.clock())
            self._cv.notify()

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._next_sweep = self.clock() + self.config.every_s
        self._thread = threading.Thread(target=self._run, name="retraining-schedule", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cv:
                due = self._due(self.clock())
                while not due and not self._stop:
                    self._cv.wait(self._wait_s(self.clock()))
                    due = self._due(self.clock())
                if self._stop:
                    return
            for model in due:
                try:
                    self.evaluate(model)
                except Exception:  # one model's failure never stops the others
                    log.exception("retraining decision for %s failed", model)

    def _due(self, now: float) -> list[str]:
        """Models to judge now (called with the condition held)."""
        settle = self.config.settle_s
        due = [m for m, t in self._dirty.items() if now - t >= settle]
        for m in due:
            del self._dirty[m]
        if now >= self._next_sweep:
            self._next_sweep = now + self.config.every_s
            try:
                due += [m for m in self.models() if m not in due]
            except Exception:
                log.exception("could not list the models to judge")
        return due

    def _wait_s(self, now: float) -> float:
        waits = [self._next_sweep - now]
        waits += [t + self.config.settle_s - now for t in self._dirty.values()]
        return max(0.05, min(waits))

    # -- one decision -------------------------------------------------------------------
    def evaluate(self, model: str) -> Any:
        """Decide for ``model`` now (None when another replica is deciding for it)."""
        with self._exclusive(model) as held:
            if not held:
                return None
            now = self.clock()
            forced, reason = self._scheduled(model, now)
            d = self.trigger.trigger(
                model, since=now - self.config.period_s, until=now, force=forced,
                reason=reason, by="schedule",
            )  # fmt: skip
            self.decisions += 1
            if d.triggered:
                log.info("retraining %s triggered: %s", model, "; ".join(d.reasons))
            return d

    def _scheduled(self, model: str, now: float) -> tuple[bool, str | None]:
        every = self.config.retrain_every_s.get(model)
        if every is None:
            return False, None
        with self.trigger.decider.drift.session() as s:
            st = s.get(RetrainingPolicyState, model)
            last = st.last_trigger_at if st is not None else None
        if last is not None and now - last < every:
            return False, None
        return True, f"retrain every {every:.0f}s"

    @contextlib.contextmanager
    def _exclusive(self, model: str) -> Iterator[bool]:
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        key = int.from_bytes(hashlib.sha256(f"farmiq-retrain:{model}".encode()).digest()[:8],
                             "big", signed=True)  # fmt: skip
        with self.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
