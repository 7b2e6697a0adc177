"""A real agent process: chunked install through a rollout, a rollback while it is offline
(caught up from retained desired state, the rolled-back version never installed again),
and transfers that resume from the last good chunk."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from edge_agent.rollout.transfer_receiver import ByteBudget, TransferReceiver
from farmiq.rollout_wire import decode_chunk, desired_for_bundle, encode_chunk
from tests.rollout.conftest import MODEL, wait_rollout


def test_agent_installs_in_chunks_and_reverts_to_previous_after_offline_rollback(
    rollout_cp, agent_factory, device_id
):
    cp = rollout_cp
    v1, v2, _ = cp.versions
    agent = agent_factory(
        device_id,
        cp.trust_root(),
        tags=["real-agent"],
        rollout={"probation_s": 0.2, "health_interval_s": 1.0},
    )
    agent.wait_for(lambda s: s["broker_connected"], what="broker")
    with cp.client() as c:
        for v in (v1, v2):
            r = c.post(
                "/api/v1/rollouts",
                json={
                    "model": MODEL,
                    "version": v,
                    "targeting": {"devices": [device_id]},
                    "waves": [{"percent": 100}],
                    "soak_s": 0.2,
                },
            )
            assert r.status_code == 200, r.text
            wait_rollout(cp, r.json()["id"], lambda d: d["status"] == "succeeded", timeout=60)
            assert agent.installed_version(MODEL) == v
        rid = r.json()["id"]
        dev = c.get(f"/api/v1/devices/{device_id}").json()
        assert (
            dev["transfer"]["state"] == "complete" and dev["transfer"]["total"] > 1
        )  # really chunked
        assert dev["in_sync"] and dev["models"][MODEL] == v2
        assert dev["agent_version"] and dev["resources"] and "link" in dev

        agent.stop()  # the barn loses its link
        assert c.post(f"/api/v1/rollouts/{rid}/rollback").json()["status"] == "rolled_back"
        agent.start()  # ...and comes back: the retained desired state says v1, v2 blocked
        agent.wait_for(
            lambda s: s["state"]["models"].get(MODEL, {}).get("version") == v1,
            timeout=30,
            what="revert to v1",
        )
        wait_rollout(
            cp, rid, lambda d: d["devices"].get("rolled_back") == 1, what="rollback confirmed"
        )
        assert agent.get(f"/api/v1/models/{MODEL}").json()["version"] == v1
        # the scheduler's automatic steps and the operator's rollback are audited
        steps = c.get("/api/v1/audit", params={"target": rid}).json()
        assert any(
            e["action"] == "rollout.advance"
            and e["actor"].startswith("system:")
            and e["detail"]["after"]["status"] == "succeeded"
            and e["detail"]["before"]["status"] != "succeeded"
            for e in steps
        ), steps
        by_api = c.get("/api/v1/audit", params={"target": f"/api/v1/rollouts/{rid}/rollback"})
        assert [e["actor"] for e in by_api.json()] == ["local"], by_api.json()  # --insecure
        # after a restart it still refuses to go back to v2
        agent.restart()
        time.sleep(1.0)
        assert agent.installed_version(MODEL) == v1
        assert v2 in agent.get("/api/v1/status").json()["state"]["blocked"][MODEL]


def _bundle(n: int = 10 * 4096 + 123) -> bytes:
    return hashlib.sha256(b"seed").digest() * (n // 32) + b"x" * (n % 32)


async def _serve(
    recv_box: list[TransferReceiver],
    data: bytes,
    spec,
    asked: list[int],
    corrupt: set[int],
    drop: set[int],
    link_up_for: int = 10**9,
):
    async def publish(payload: bytes) -> None:
        import orjson

        req = orjson.loads(payload)
        for i in req["chunks"]:
            asked.append(i)
            if len(asked) > link_up_for:
                continue  # the link is down: requests go nowhere
            if i in drop:
                drop.discard(i)  # lost once, then delivered on the retry
                continue
            blob = data[i * spec.chunk_size : (i + 1) * spec.chunk_size]
            if i in corrupt:
                corrupt.discard(i)
                blob = b"\0" + blob[1:]
            msg = encode_chunk(spec.bundle_id, i, len(spec.chunks), blob)
            asyncio.get_running_loop().call_soon(recv_box[0].on_chunk, msg)

    return publish


def test_transfer_resumes_from_last_good_chunk_after_reboot_and_rejects_bad_chunks(tmp_path):
    data = _bundle()
    spec = desired_for_bundle(data, version=2, bundle_id="b" * 16, chunk_size=4096)
    n = len(spec.chunks)

    async def first_boot() -> None:
        asked: list[int] = []
        box: list[TransferReceiver] = []
        pub = await _serve(box, data, spec, asked, corrupt={1}, drop={2}, link_up_for=8)
        r = TransferReceiver(pub, state_dir=tmp_path, window=2, request_timeout_s=0.2)
        box.append(r)
        task = asyncio.ensure_future(r.fetch(spec))
        while len(asked) <= 8:
            await asyncio.sleep(0.01)
        held = int(r.progress()["received"])  # type: ignore[call-overload]
        task.cancel()  # power cut
        with pytest.raises(asyncio.CancelledError):
            await task
        assert r.chunks_rejected == 1  # the corrupted chunk was not kept
        assert 3 <= held < n

    async def second_boot() -> tuple[bytes, list[int]]:
        asked: list[int] = []
        box: list[TransferReceiver] = []
        pub = await _serve(box, data, spec, asked, corrupt=set(), drop=set())
        r = TransferReceiver(pub, state_dir=tmp_path, window=4, request_timeout_s=0.2)
        box.append(r)
        return await asyncio.wait_for(r.fetch(spec), 10), asked

    asyncio.run(first_boot())
    got, asked = asyncio.run(second_boot())
    assert got == data
    assert len(set(asked)) <= n - 3  # held chunks were not fetched again
    assert decode_chunk(encode_chunk("b", 3, 9, b"abc")) == ("b", 3, 9, b"abc")


def test_byte_budget_stops_the_transfer_and_says_so(tmp_path):
    data = _bundle(8 * 4096)
    spec = desired_for_bundle(data, version=2, bundle_id="c" * 16, chunk_size=4096)
    states: list[str] = []

    async def run() -> None:
        box: list[TransferReceiver] = []
        asked: list[int] = []
        inner = await _serve(box, data, spec, asked, set(), set())

        async def publish(payload: bytes) -> None:
            import orjson

            states.append(orjson.loads(payload)["state"])
            await inner(payload)

        budget = ByteBudget(3 * 4096 + 1000, 3600, tmp_path / "budget.json")
        r = TransferReceiver(
            publish, state_dir=tmp_path, window=1, request_timeout_s=0.2, budget=budget
        )
        box.append(r)
        task = asyncio.ensure_future(r.fetch(spec))
        for _ in range(200):
            if "budget-exhausted" in states:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        assert r.progress()["received"] == 3
        assert (
            ByteBudget(3 * 4096 + 1000, 3600, tmp_path / "budget.json").used >= 3 * 4096
        )  # survives restart

    asyncio.run(run())
    assert "budget-exhausted" in states
