"""The routing policy: which target answers a request, in what order, and why. Pure
decisions over the router's per-model state; no I/O, no awaiting (the router, the
executor, runs what this decides).

Read it as a table. For each target the bundle allows (``serving.targets``, in order):

| target            | skipped when                                      | expected latency            | cost |
| ----------------- | ------------------------------------------------- | --------------------------- | ---- |
| edge              | never                                             | EWMA, + queue of the batcher | 0    |
| mcu / cloud / ... | not configured; does not hold the model;          | EWMA, else default + cold   | the  |
|                   | circuit breaker open                              | start                       | target's |

Candidates are ordered by: fits the latency budget, then bundle preference, then cost.
The reason names the first: ``preferred`` (the bundle's first choice), ``budget`` (the
first choice would miss the budget), ``fallback`` (the first choice is skipped).

The fast path (no planning at all) is taken when the bundle prefers the edge, the model
runs inline, there is no confidence cascade and the budget (if any) is not below the
edge's expected latency.

The cascade (low-confidence rows of an edge answer) goes to the cheapest remote of kind
cloud/serverless that is configured, has a closed breaker and fits what is left of the
budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from edge_agent.inference.breaker import OPEN, CircuitBreaker
from edge_agent.inference.targets.remote_target import RemoteTarget

EDGE = "edge"
REMOTE_KINDS = ("cloud", "serverless")  # what the confidence cascade escalates to


class ModelRouting(Protocol):
    """The per-model state the policy reads (the router's ``_ModelState``)."""

    name: str
    cloud_name: str
    targets: list[str]
    ewma: dict[str, float]
    inline: bool
    threshold: float | None

    def edge_expected_ms(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    target: str
    expected_ms: float
    cost: float
    rank: int  # position in the bundle's preference
    fits: bool  # expected within the budget (or no budget)


def takes_fast_path(st: ModelRouting, budget_ms: float | None) -> bool:
    return (
        st.targets[0] == EDGE
        and st.inline
        and st.threshold is None
        and (budget_ms is None or budget_ms >= st.ewma[EDGE])
    )


def skip_reason(
    target: str, model: ModelRouting, remote: RemoteTarget | None, breaker: CircuitBreaker | None
) -> str | None:
    """Why ``target`` cannot serve ``model`` now, or None when it can."""
    if target == EDGE:
        return None
    if remote is None or not remote.configured():
        return "not configured"
    if not remote.holds(model.name if target == "mcu" else model.cloud_name):
        return "does not hold the model"
    if breaker is not None and breaker.state == OPEN:
        return "circuit breaker open"
    return None


def candidate(
    target: str, rank: int, st: ModelRouting, remote: RemoteTarget | None,
    breaker: CircuitBreaker | None, budget_ms: float | None, default_remote_ms: float,
) -> Candidate | str:  # fmt: skip
    """A target's answer to "can you serve this?": a candidate, or why not."""
    why = skip_reason(target, st, remote, breaker)
    if why is not None:
        return f"{target}: {why}"
    if target == EDGE:
        exp, cost = st.edge_expected_ms(), 0.0
    else:
        assert remote is not None
        exp = st.ewma.get(target, default_remote_ms + remote.cold_start_ms)
        cost = remote.cost
    return Candidate(target, exp, cost, rank, budget_ms is None or exp <= budget_ms)


def plan(
    st: ModelRouting, remotes: Mapping[str, RemoteTarget],
    breakers: Mapping[str, CircuitBreaker], budget_ms: float | None, default_remote_ms: float,
) -> tuple[list[Candidate], list[str]]:  # fmt: skip
    """Targets to try, best first; and why the others are out."""
    cands: list[Candidate] = []
    skipped: list[str] = []
    for rank, t in enumerate(st.targets):
        c = candidate(t, rank, st, remotes.get(t), breakers.get(t), budget_ms, default_remote_ms)
        if isinstance(c, str):
            skipped.append(c)
        else:
            cands.append(c)
    cands.sort(key=lambda c: (not c.fits, c.rank, c.cost))
    return cands, skipped


def reason(
    st: ModelRouting, chosen: list[Candidate], skipped: list[str], budget: float | None,
    queue: int,
) -> tuple[str, str]:  # fmt: skip
    """(decision code, human reason) for the first candidate of a plan."""
    first = chosen[0]
    pref = st.targets[0]
    if first.target == pref:
        base = f"{first.target} first (bundle preference)"
        if budget is not None:
            base += f"; expected {first.expected_ms:.2f} ms within budget {budget:g} ms"
        return "preferred", base
    by_target = {c.target: c for c in chosen}
    if pref in by_target:
        return "budget", (
            f"{pref} expected {by_target[pref].expected_ms:.2f} ms (queue {queue}) "
            f"misses budget {budget:g} ms; {first.target} expected {first.expected_ms:.2f} ms"
        )
    return "fallback", f"{'; '.join(skipped)}; {first.target} is next in preference"


def cascade_choices(
    st: ModelRouting, remotes: Mapping[str, RemoteTarget],
    breakers: Mapping[str, CircuitBreaker], deadline: float | None, default_remote_ms: float,
) -> tuple[list[str], list[str]]:  # fmt: skip
    """Remotes to escalate low-confidence rows to, cheapest first; and why not the others."""
    choices: list[tuple[float, str]] = []
    why_not: list[str] = []
    for t in st.targets:
        if t not in REMOTE_KINDS:
            continue
        remote = remotes.get(t)
        if remote is None or not remote.configured():
            why_not.append(f"{t} not configured")
            continue
        b = breakers.get(t)
        if b is not None and b.state == OPEN:
            why_not.append(f"{t} unreachable (circuit breaker open)")
            continue
        exp = st.ewma.get(t, default_remote_ms + remote.cold_start_ms)
        if deadline is not None and time.perf_counter() + exp / 1000.0 > deadline:
            why_not.append(f"{t} expected {exp:.1f} ms exceeds what is left of the budget")
            continue
        choices.append((remote.cost, t))
    choices.sort()
    return [t for _, t in choices], why_not


def reserve_for_edge_s(plan_after: list[Candidate], st: ModelRouting) -> float:
    """Time kept back from a remote attempt when the edge comes later in the plan."""
    if any(c.target == EDGE for c in plan_after):
        return (2 * st.ewma[EDGE] + 0.5) / 1000.0
    return 0.0


__all__ = [
    "EDGE",
    "REMOTE_KINDS",
    "Candidate",
    "ModelRouting",
    "candidate",
    "cascade_choices",
    "plan",
    "reason",
    "reserve_for_edge_s",
    "skip_reason",
    "takes_fast_path",
]
