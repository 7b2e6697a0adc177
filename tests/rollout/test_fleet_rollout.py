"""Staged rollouts to a simulated fleet on the real broker, through the real control plane:
waves complete, a restart mid-wave resumes where it stopped, failing canaries stop the
rollout at the canary wave and roll it back, the operator API is documented."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

from control_plane.rollout.targeting import assign_waves
from farmiq_sim.fleet.fleet import _share
from tests.rollout.conftest import MODEL, wait_devices_known, wait_rollout
from tests.rollout.models import good_model, register


def _create(cp, **body):
    body.setdefault("model", MODEL)
    with cp.client() as c:
        r = c.post("/api/v1/rollouts", json=body)
        assert r.status_code == 200, r.text
        return r.json()


def test_waves_complete_and_survive_a_control_plane_restart_mid_wave(rollout_cp, fleet_factory):
    cp = rollout_cp
    v1, v2, _ = cp.versions
    tag = f"t{uuid.uuid4().hex[:6]}"
    fleet = fleet_factory(cp, gateways=20, prefix=tag, tags=[tag], initial_version=v1)
    wait_devices_known(cp, tag, 20)
    doc = _create(
        cp,
        version=v2,
        targeting={"tags": [tag]},
        waves=[{"percent": 10}, {"percent": 50}, {"percent": 100}],
        soak_s=2.0,
        rate_per_minute=600,
        max_concurrent=20,
    )
    rid = doc["id"]
    assert doc["status"] in ("pending", "running")
    # kill the control plane while the canary wave soaks, then start it again
    wait_rollout(cp, rid, lambda d: d["waves"][0]["status"] == "soaking", what="canary soaking")
    cp.stop(signal.SIGKILL)
    cp.start()
    done = wait_rollout(
        cp, rid, lambda d: d["status"] in ("succeeded", "failed", "paused"), timeout=90
    )
    assert done["status"] == "succeeded", done
    assert fleet.versions() == {v2: 20}
    assert [w["status"] for w in done["waves"]] == ["succeeded"] * 3
    # the canary wave started once, before the restart; nothing ran twice
    with cp.client() as c:
        devs = c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
    assert len(devs) == 20 and all(d["status"] == "installed" for d in devs)
    assert all(d["sends"] >= 1 for d in devs)
    # each device sits in the wave its hash says, the same before and after the restart
    # (how many land in the 10% canary wave varies with the rollout id: 1 to 9 of 20 seen)
    expected = assign_waves(rid, sorted(d["device_id"] for d in devs), [10, 50, 100])
    assert {d["device_id"]: d["wave"] for d in devs} == expected
    assert 0 in expected.values()
    # the registry shows desired == reported for every device
    with cp.client() as c:
        inv = c.get("/api/v1/devices", params={"tag": tag, "model": MODEL, "version": v2}).json()
    assert inv["count"] == 20 and all(d["in_sync"] for d in inv["devices"])


def test_failing_canaries_stop_the_rollout_at_the_canary_wave_and_roll_it_back(
    rollout_cp, fleet_factory
):
    cp = rollout_cp
    _, v2, v3 = cp.versions
    tag = f"f{uuid.uuid4().hex[:6]}"
    # Which gateways fail and which are canaries are both hashes of their ids: with half
    # failing, the 9 canaries all passing has odds of 1 in 512 (with 0.3 it was 1 in 25).
    fleet = fleet_factory(
        cp, gateways=30, prefix=tag, tags=[tag], initial_version=v2, fail_rate=0.5
    )
    wait_devices_known(cp, tag, 30)
    doc = _create(
        cp,
        version=v3,
        targeting={"tags": [tag]},
        waves=[{"percent": 30}, {"percent": 100}],
        soak_s=0.5,
        gates={"min_install_success": 0.95},
        rate_per_minute=600,
    )
    rid = doc["id"]
    done = wait_rollout(cp, rid, lambda d: d["status"] in ("paused", "failed", "succeeded"))
    assert done["status"] == "paused", done
    assert done["waves"][0]["status"] == "failed" and done["waves"][1]["status"] == "pending"
    assert "install_success" in done["reason"]

    # nobody outside the canary wave got v3, and the canaries that took it are back on v2
    def settled(d):
        return d["waves"][0]["devices"].get("rolling_back", 0) == 0

    wait_rollout(cp, rid, settled, what="canary rollback confirmed")
    assert fleet.versions().get(v3, 0) == 0
    with cp.client() as c:
        devs = c.get(f"/api/v1/rollouts/{rid}/devices").json()["devices"]
        assert {d["wave"] for d in devs} == {0}
        dev = c.get(f"/api/v1/devices/{devs[0]['device_id']}").json()
    assert v3 in dev["desired"]["models"][MODEL]["blocked"]
    # an operator abort now is a legal transition; a second resume is not
    with cp.client() as c:
        assert c.post(f"/api/v1/rollouts/{rid}/abort").json()["status"] == "aborted"
        assert c.post(f"/api/v1/rollouts/{rid}/resume").status_code == 409


def test_operator_api_is_documented(rollout_cp):
    with rollout_cp.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    for p in (
        "/api/v1/rollouts",
        "/api/v1/rollouts/{rollout_id}",
        "/api/v1/rollouts/{rollout_id}/pause",
        "/api/v1/rollouts/{rollout_id}/resume",
        "/api/v1/rollouts/{rollout_id}/abort",
        "/api/v1/rollouts/{rollout_id}/rollback",
        "/api/v1/devices",
        "/api/v1/bundles",
    ):
        assert p in paths, p
        assert all(op.get("summary") for op in paths[p].values())


def test_rollout_completes_through_offline_churn_and_slow_metered_links(rollout_cp, fleet_factory):
    """A third of the fleet drops off right as the rollout starts and catches up from the
    retained desired state when it returns; slow cellular links stay within their byte
    budget (they pause, say so, and resume) and still finish."""
    cp = rollout_cp
    v1 = cp.versions[0]
    big = good_model(3)  # registered with its drift reference: a bundle of many chunks
    v_new = register(cp, MODEL, big.onnx_bytes, big.reference)
    n, rate = 12, 0.3
    tag = ""
    while True:  # a prefix whose stable hashes give both kinds of gateway, and not the same
        tag = f"c{uuid.uuid4().hex[:6]}"
        ids = [f"{tag}-{i:05d}" for i in range(n)]
        churn = {d for d in ids if _share("offline", d) < rate}
        slow = {d for d in ids if _share("slow", d) < rate}
        if churn and slow and churn != slow:
            break
    budget, period = 3 * (4096 + 128), 1.5
    fleet = fleet_factory(
        cp,
        gateways=n,
        prefix=tag,
        tags=[tag],
        initial_version=v1,
        offline_rate=rate,
        offline_s=4.0,
        slow_link=rate,
        slow_bps=32 * 1024,
        slow_budget=budget,
        budget_period_s=period,
    )
    wait_devices_known(cp, tag, n)
    away = asyncio.run_coroutine_threadsafe(fleet.fleet.offline_churn(0, at_once=True), fleet.loop)
    t_off = time.time()
    doc = _create(
        cp,
        version=v_new,
        targeting={"tags": [tag]},
        waves=[{"percent": 100}],
        soak_s=0.5,
        rate_per_minute=600,
        max_concurrent=n,
    )
    time.sleep(2.0)
    gws = {g.device_id: g for g in fleet.fleet.gateways}
    assert all(gws[d].models[MODEL][0] == v1 and not gws[d].online for d in churn)
    try:
        done = wait_rollout(cp, doc["id"], lambda d: d["status"] in ("succeeded", "paused"), 60)
    except AssertionError as exc:
        state = {
            d: (g.online, g.models.get(MODEL), g.receiver.progress(), g.receiver.budget_waits)
            for d, g in gws.items()
        }
        raise AssertionError(f"{exc}\nchurn {churn} slow {slow}\n{state}") from None
    away.result(10)
    assert done["status"] == "succeeded", done
    assert fleet.versions() == {v_new: n}
    for d in churn:  # they installed after they came back, not while away
        assert gws[d].installed_at is not None and gws[d].installed_at >= t_off + 4.0
    chunks = done_chunks = 0
    for d in slow:
        r = gws[d].receiver
        assert r.budget.peak <= budget, (d, r.budget.peak)  # never over the budget
        assert r.budget_waits >= 1  # the bundle is bigger than one period's budget
        done_chunks += len(gws[d].chunk_arrivals)
        chunks += 1
    assert done_chunks >= chunks * 4
    with cp.client() as c:
        inv = c.get("/api/v1/devices", params={"tag": tag}).json()["devices"]
    assert len(inv) == n and all(x["in_sync"] for x in inv)
