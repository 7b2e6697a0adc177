"""Real agent processes in rollouts that judge the model itself, not just the install:

* shadow mode: a shadow wave loads the candidate beside the served model, runs it on live
  requests (here through POST /api/v1/inference/batch) without serving it, reports its
  agreement on up/shadow, and the gate promotes an agreeing candidate and stops one whose
  labels are permuted;
* probation: a candidate that passes the warm-up on zeros but answers NaN on real
  readings is rolled back by the gateway itself, which says so, and the rollout stops.
"""

from __future__ import annotations

import math
import time
from typing import Any

from tests.rollout.conftest import MODEL, wait_rollout
from tests.rollout.models import (
    META,
    barn_rows,
    good_model,
    nan_on_real_inputs_model,
    permuted_label_model,
    register,
)

SHADOW_GATES = {"min_shadow_agreement": 0.8, "min_shadow_rows": 40}


def _rollout(cp: Any, device: str, version: int, **kw: Any) -> str:
    body = {
        "model": MODEL,
        "version": version,
        "targeting": {"devices": [device]},
        "waves": [{"percent": 100}],
        "soak_s": 0.2,
        **kw,
    }
    with cp.client() as c:
        r = c.post("/api/v1/rollouts", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _batch(agent: Any, rows: list[list[float]]) -> list[dict[str, Any]]:
    reqs = [{"model": MODEL, "inputs": [row], "cache": False} for row in rows]
    r = agent.post("/api/v1/inference/batch", {"requests": reqs})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert all(x["status"] == 200 for x in results), results[:3]
    return results  # type: ignore[no-any-return]


def _shadow_wave_until(cp: Any, agent: Any, rid: str, pred: Any, what: str) -> dict[str, Any]:
    """Feed live traffic until the rollout satisfies ``pred``; every answer must come from
    the served model, never from the shadow candidate."""
    served: set[int] = set()
    deadline = time.time() + 60
    rows = barn_rows(400)
    i = 0
    with cp.client() as c:
        while time.time() < deadline:
            doc = c.get(f"/api/v1/rollouts/{rid}").json()
            if pred(doc):
                return {"doc": doc, "served": served}
            if doc["waves"][0]["status"] in ("running", "soaking"):
                served |= {x["version"] for x in _batch(agent, rows[i % 400 : i % 400 + 10])}
                i += 10
            time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {doc}")


def _start_agent(cp: Any, agent_factory: Any, device_id: str) -> Any:
    agent = agent_factory(
        device_id,
        cp.trust_root(),
        rollout={"probation_s": 0.5, "health_interval_s": 1.0, "shadow_report_s": 0.3},
    )
    agent.wait_for(lambda s: s["broker_connected"], what="broker")
    return agent


def test_shadow_wave_promotes_an_agreeing_candidate_and_stops_a_permuted_one(
    rollout_cp, agent_factory, device_id
):
    cp = rollout_cp
    v1, v2, _ = cp.versions
    agent = _start_agent(cp, agent_factory, device_id)
    wait_rollout(cp, _rollout(cp, device_id, v1), lambda d: d["status"] == "succeeded")
    assert agent.installed_version(MODEL) == v1

    # 1. an agreeing candidate: shadow wave, then the install wave over the same devices
    rid = _rollout(
        cp,
        device_id,
        v2,
        waves=[{"percent": 100, "mode": "shadow"}, {"percent": 100}],
        gates=SHADOW_GATES,
    )
    got = _shadow_wave_until(
        cp, agent, rid, lambda d: d["waves"][0]["status"] == "succeeded", "shadow gate"
    )
    assert got["served"] == {v1}  # the candidate never answered a request
    gate = {c["name"]: c for c in got["doc"]["waves"][0]["gate"]["checks"]}
    assert gate["shadow_agreement"]["passed"] and gate["shadow_agreement"]["value"] >= 0.8
    done = wait_rollout(cp, rid, lambda d: d["status"] in ("succeeded", "paused", "failed"))
    assert done["status"] == "succeeded", done
    assert agent.installed_version(MODEL) == v2
    assert agent.get("/api/v1/status").json()["state"]["shadow"] == {}  # shadowing ended
    with cp.client() as c:
        shadow = c.get(f"/api/v1/devices/{device_id}").json()["shadow"][MODEL]
    assert shadow["candidate_version"] == v2 and shadow["rows"] >= 40
    assert shadow["agree"] / shadow["rows"] >= 0.8  # the final report, sent when cleared

    # 2. a candidate with permuted labels: it loads and answers fine, but disagrees
    v_perm = register(cp, MODEL, permuted_label_model())
    rid = _rollout(
        cp,
        device_id,
        v_perm,
        waves=[{"percent": 100, "mode": "shadow"}, {"percent": 100}],
        gates=SHADOW_GATES,
    )
    got = _shadow_wave_until(
        cp, agent, rid, lambda d: d["status"] in ("paused", "failed", "succeeded"), "gate"
    )
    doc = got["doc"]
    assert doc["status"] == "paused", doc
    assert doc["waves"][0]["status"] == "failed" and doc["waves"][1]["status"] == "pending"
    assert "shadow_agreement" in doc["reason"]
    gate = {c["name"]: c for c in doc["waves"][0]["gate"]["checks"]}
    assert gate["shadow_agreement"]["value"] < 0.5
    assert got["served"] == {v2}
    # the gateway stops shadowing, keeps serving v2 and will never take the candidate
    agent.wait_for(
        lambda s: s["state"]["shadow"] == {} and v_perm in s["state"]["blocked"].get(MODEL, []),
        timeout=20,
        what="shadow cleared and candidate blocked",
    )
    assert agent.installed_version(MODEL) == v2


def test_gateway_rolls_back_a_candidate_that_answers_nan_on_real_readings(
    rollout_cp, agent_factory, device_id
):
    cp = rollout_cp
    v1 = cp.versions[0]
    agent = _start_agent(cp, agent_factory, device_id)
    wait_rollout(cp, _rollout(cp, device_id, v1), lambda d: d["status"] == "succeeded")
    base = good_model(0)
    # registered with its drift reference, as a real pipeline does: the bundle carries
    # sample rows of the training data, which probation runs the new model on
    # skip_gate: the registry's gate would refuse it; this is the gateway's own defence
    v_bad = register(
        cp, MODEL, nan_on_real_inputs_model(base.onnx_bytes), base.reference,
        {**META, "skip_gate": True},
    )  # fmt: skip
    rid = _rollout(cp, device_id, v_bad)
    doc = wait_rollout(cp, rid, lambda d: d["status"] in ("paused", "failed", "succeeded"))
    assert doc["status"] == "paused", doc
    assert "install_success" in doc["reason"]
    with cp.client() as c:
        (dev,) = c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
    assert dev["code"] == "self-rollback", dev  # the gateway reported what it did
    assert "non-finite 'probabilities'" in dev["reason"]
    # back on v1 by itself, answering real readings with finite probabilities
    assert agent.installed_version(MODEL) == v1
    out = _batch(agent, barn_rows(5))
    assert {x["version"] for x in out} == {v1}
    assert all(math.isfinite(p) for x in out for p in x["outputs"]["probabilities"][0])
    info = agent.get(f"/api/v1/models/{MODEL}").json()
    assert info["version"] == v1
    wait_rollout(cp, rid, lambda d: d["devices"].get("rolled_back") == 1, what="rollback ack")
    assert v_bad in agent.get("/api/v1/status").json()["state"]["blocked"][MODEL]


def test_probation_cut_short_by_a_crash_is_finished_after_restart(
    rollout_cp, agent_factory, device_id
):
    """kill -9 while a new version is on probation: after the restart the gateway finishes
    the probation (marker kept on disk) before it reports the version as installed."""
    import json
    import tomllib

    from farmiq.config import dump_toml
    from tests.support.mqtt import wait_until

    cp = rollout_cp
    v2 = cp.versions[1]
    agent = agent_factory(
        device_id, cp.trust_root(), rollout={"probation_s": 60.0, "health_interval_s": 1.0}
    )
    agent.wait_for(lambda s: s["broker_connected"], what="broker")
    rid = _rollout(cp, device_id, v2)
    wait_until(lambda: agent.installed_version(MODEL) == v2, 30, "v2 switched in")
    desired = agent.state_dir / "desired.json"
    wait_until(lambda: MODEL in json.loads(desired.read_text()).get("probation", {}), 10, "marker")
    agent.kill()  # mid-probation: nothing acknowledged yet
    with cp.client() as c:
        (dev,) = c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
    assert dev["code"] != "installed", dev

    cfg = tomllib.loads(agent.config_path.read_text())
    cfg["rollout"]["probation_s"] = 0.5
    agent.config_path.write_text(dump_toml(cfg))
    agent.start()
    doc = wait_rollout(cp, rid, lambda d: d["status"] == "succeeded", what="probation finished")
    with cp.client() as c:
        (dev,) = c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
    assert dev["code"] == "installed", dev  # probation ran to its end, not "already-installed"
    assert json.loads(desired.read_text()).get("probation") == {}
    assert agent.installed_version(MODEL) == v2, doc
