"""kill -9 of the gateway at any moment: nothing it owes the cloud is lost, and no model is
ever half installed (after a restart the previous or the new version serves, verified)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.uplink.outbox import Outbox
from farmiq import topics
from tests.edge_robustness.helpers import NAME, Gateway, make_bundle

REPO = Path(__file__).resolve().parents[2]

# Queues items (through the worker-thread path the agent uses) while the publisher sends
# and re-sends them without acknowledgements; prints each key once its put returned.
WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from edge_agent.uplink.outbox import Outbox

    async def main():
        async def publish(topic, payload, qos):
            await asyncio.sleep(0)
        box = Outbox(sys.argv[1], publish, ack_timeout_s=0.05, retry_min_s=0.01)
        asyncio.create_task(box.run())
        i = 0
        while True:
            key = f"k{i}"
            await box.aput("farmiq/v1/gw/g/up/drift", b"x" * 512, key)
            print(key, flush=True)
            i += 1
            if i % 7 == 0:
                await asyncio.sleep(0.001)  # let the publisher run its rounds

    asyncio.run(main())
    """
)


def test_sigkill_while_queueing_and_sending_loses_no_outbox_item(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # started
        assert first.startswith("k"), first
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        confirmed = {first.strip(), *proc.stdout.read().split()}
        box = Outbox(db)
        held = {k for k, _, _ in box.items()}
        box.close()
        lost = confirmed - held
        assert len(confirmed) > 50, "the writer did not get going"
        assert not lost, f"{len(lost)} acknowledged puts lost after kill -9: {sorted(lost)[:5]}"


def test_sigkill_during_bundle_install_leaves_old_or_new_model(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(version=2)
    served = 2
    # Land the kill at different points: before, during and after verify/stage/load/switch.
    for i, delay in enumerate((0.0, 0.05, 0.12, 0.2, 0.35, 0.6)):
        new = served + 1
        bundle = make_bundle(gw.signer, new)
        gw.listener.publish(topics.down(gw.id, topics.BUNDLE), bundle)
        time.sleep(delay)
        gw.agent.kill()
        gw.agent.start()
        status = gw.agent.wait_for(lambda s: s["ready"], what=f"ready after kill {i}")
        version = gw.agent.installed_version(NAME)
        assert version in (served, new), (delay, version, status)
        assert gw.answer() == float(version), "the served model is not the one reported"
        staging = list((gw.agent.state_dir / "staging").iterdir())
        assert not staging, f"half-installed bundle left in staging: {staging}"
        served = version
    # The kills left nothing that stops the next install.
    ack = gw.push(make_bundle(gw.signer, served + 5))
    assert ack["ok"] and ack["version"] == served + 5, ack
    assert gw.answer() == float(served + 5)
    # And a restart serves the same model, verified again from disk.
    gw.agent.kill()
    gw.agent.start()
    gw.agent.wait_for(lambda s: s["ready"], what="ready after the last kill")
    assert gw.answer() == float(served + 5)


def test_damaged_current_version_falls_back_to_previous_on_restart(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gw = gateway_factory(version=2)
    ack = gw.push(make_bundle(gw.signer, 3))
    assert ack["ok"] and ack["version"] == 3, ack
    gw.agent.kill()
    current = (gw.agent.state_dir / "models" / NAME / "current").resolve()
    (current / "model" / "model.onnx").write_bytes(b"torn write")  # e.g. a failing SD card
    gw.agent.start()
    gw.agent.wait_for(lambda s: s["ready"], what="ready on the previous version")
    assert gw.agent.installed_version(NAME) == 2
    assert gw.answer() == 2.0
    # the next install works from there
    ack = gw.push(make_bundle(gw.signer, 4))
    assert ack["ok"] and ack["version"] == 4, ack
    assert gw.answer() == 4.0
