"""Rollout and wave states and the transitions allowed between them.

    pending -> running <-> soaking -> succeeded
    running|soaking -> paused -> running          (operator, or a failed gate)
    running|soaking|paused -> failed | aborted    (gate with on_gate_failure=abort / operator)
    any but rolled_back -> rolled_back            (operator rollback)

Waves use the same names; a wave is never "paused" itself (its rollout is).
"""

from __future__ import annotations

PENDING, RUNNING, SOAKING, PAUSED = "pending", "running", "soaking", "paused"
SUCCEEDED, FAILED, ABORTED, ROLLED_BACK = "succeeded", "failed", "aborted", "rolled_back"
STATES = (PENDING, RUNNING, SOAKING, PAUSED, SUCCEEDED, FAILED, ABORTED, ROLLED_BACK)
ACTIVE = (PENDING, RUNNING, SOAKING)  # the scheduler advances these
FINAL = (SUCCEEDED, FAILED, ABORTED, ROLLED_BACK)

_ROLLOUT: dict[str, set[str]] = {
    PENDING: {RUNNING, PAUSED, ABORTED, ROLLED_BACK},
    RUNNING: {SOAKING, PAUSED, SUCCEEDED, FAILED, ABORTED, ROLLED_BACK},
    SOAKING: {RUNNING, PAUSED, SUCCEEDED, FAILED, ABORTED, ROLLED_BACK},
    PAUSED: {RUNNING, FAILED, ABORTED, ROLLED_BACK},
    SUCCEEDED: {ROLLED_BACK},
    FAILED: {ROLLED_BACK},
    ABORTED: {ROLLED_BACK},
    ROLLED_BACK: set(),
}
_WAVE: dict[str, set[str]] = {
    PENDING: {RUNNING, ABORTED, ROLLED_BACK},
    RUNNING: {SOAKING, FAILED, ABORTED, ROLLED_BACK},
    SOAKING: {SUCCEEDED, FAILED, ABORTED, ROLLED_BACK},
    SUCCEEDED: {ROLLED_BACK},
    FAILED: {PENDING, ROLLED_BACK},  # PENDING: the operator resumed, the wave runs again
    ABORTED: {ROLLED_BACK},
    ROLLED_BACK: set(),
}


class TransitionError(ValueError):
    def __init__(self, what: str, frm: str, to: str) -> None:
        super().__init__(f"{what} cannot go from {frm!r} to {to!r}")
        self.frm, self.to = frm, to


def check_rollout(frm: str, to: str) -> str:
    if to not in _ROLLOUT.get(frm, set()):
        raise TransitionError("a rollout", frm, to)
    return to


def check_wave(frm: str, to: str) -> str:
    if to not in _WAVE.get(frm, set()):
        raise TransitionError("a wave", frm, to)
    return to
