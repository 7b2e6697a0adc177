"""Health gates of a wave, from what the wave's devices reported.

* install success ratio: installed / (installed + failed) among devices that answered;
* inference error rate: errors / requests of the new version, summed over the wave;
* p99 latency: the median over the wave's devices of each device's p99 (one slow barn
  does not fail a wave; a slow model does);
* shadow agreement (shadow waves): agreeing rows / compared rows, summed over the wave.

A metric with no data passes unless ``min_*`` counts say otherwise; each check reports
its value and threshold so operators see why a gate held or failed.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_install_success: float = Field(default=0.95, ge=0, le=1)
    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    min_shadow_agreement: float | None = Field(default=0.9, ge=0, le=1)
    min_shadow_rows: int = Field(default=0, ge=0, description="compared rows needed before judging")
    # Learning-loop candidates: agreement with a drifted champion is the wrong test for a
    # model retrained on the drift, so their shadow wave is judged on labelled feedback
    # instead: the candidate must beat the champion's accuracy by this many points on the
    # feedback the wave's gateways sent during the shadow period (Scheduler.feedback_gate).
    min_feedback_gain: float | None = Field(default=None, ge=0, le=1)
    min_feedback_rows: int = Field(default=0, ge=0, description="labelled rows needed to judge")


@dataclass
class Check:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str = ""


@dataclass
class GateResult:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}

    def why(self) -> str:
        return "; ".join(
            f"{c.name} {c.value} vs {c.threshold}" for c in self.checks if not c.passed
        )


def install_budget_exceeded(t: GateThresholds, wave_size: int, failed: int) -> bool:
    """Fail fast: more failures than the whole wave may have, even if all others succeed."""
    return wave_size > 0 and failed > (1 - t.min_install_success) * wave_size


def shadow_rows(shadow: dict[str, dict[str, Any]], model: str, version: int) -> tuple[int, int]:
    """(compared rows, agreeing rows) of candidate ``version`` summed over the devices."""
    rows = agree = 0
    for rep in shadow.values():
        r = (rep or {}).get(model) or {}
        if r.get("candidate_version") == version:
            rows += int(r.get("rows") or 0)
            agree += int(r.get("agree") or 0)
    return rows, agree


def evaluate(
    t: GateThresholds,
    *,
    model: str,
    version: int,
    mode: str,
    statuses: dict[str, str],
    health: dict[str, dict[str, Any]],
    shadow: dict[str, dict[str, Any]],
) -> GateResult:
    checks: list[Check] = []
    installed = sum(1 for s in statuses.values() if s == "installed")
    failed = sum(1 for s in statuses.values() if s == "failed")
    answered = installed + failed
    ratio = installed / answered if answered else None
    checks.append(
        Check(
            "install_success",
            ratio,
            t.min_install_success,
            # A wave its buckets left empty (few devices) has nothing to fail.
            (ratio is not None and ratio >= t.min_install_success) or not statuses,
            f"{installed} installed, {failed} failed, {len(statuses) - answered} silent",
        )
    )
    if mode == "install":
        reqs = errs = 0
        p99s = []
        for dev, h in health.items():
            if statuses.get(dev) != "installed":
                continue
            m = (h.get("models") or {}).get(model) or {}
            if m.get("version") != version:
                continue
            reqs += int(m.get("requests") or 0)
            errs += int(m.get("errors") or 0)
            if m.get("p99_ms") is not None:
                p99s.append(float(m["p99_ms"]))
        if t.max_error_rate is not None:
            rate = errs / reqs if reqs else None
            checks.append(
                Check(
                    "error_rate",
                    rate,
                    t.max_error_rate,
                    rate is None or rate <= t.max_error_rate,
                    f"{errs}/{reqs} requests failed",
                )
            )
        if t.max_p99_ms is not None:
            p99 = statistics.median(p99s) if p99s else None
            checks.append(
                Check(
                    "p99_ms",
                    p99,
                    t.max_p99_ms,
                    p99 is None or p99 <= t.max_p99_ms,
                    f"median of {len(p99s)} device p99s",
                )
            )
    elif t.min_shadow_agreement is not None:
        rows, agree = shadow_rows(shadow, model, version)
        agreement = agree / rows if rows else None
        enough = rows >= t.min_shadow_rows
        checks.append(
            Check(
                "shadow_agreement",
                agreement,
                t.min_shadow_agreement,
                enough and (agreement is None or agreement >= t.min_shadow_agreement),
                f"{agree}/{rows} rows agreed",
            )
        )
    return GateResult(all(c.passed for c in checks), checks)
