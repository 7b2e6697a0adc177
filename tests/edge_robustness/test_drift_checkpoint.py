"""kill -9 (a power cut) of the gateway loses at most one checkpoint interval of drift
statistics: the open window is checkpointed to the agent's SQLite state and, after the
restart, reaches the cloud as a partial window instead of vanishing."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import numpy as np

from farmiq import topics
from farmiq.drift_reference import build_reference
from tests.edge_robustness.helpers import NAME, Gateway, make_bundle

ROWS = 37


def _checkpointed_rows(db: str) -> int:
    con = sqlite3.connect(db)
    try:
        docs = [json.loads(d) for (d,) in con.execute("SELECT doc FROM open_windows")]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()
    return sum(d["n"] for d in docs if d["model"] == NAME)


def test_sigkill_keeps_the_open_drift_window(gateway_factory: Callable[..., Gateway]) -> None:
    # An hour-long window (the default) checkpointed every half second.
    gw = gateway_factory(version=None, drift={"window_s": 3600.0, "checkpoint_s": 0.5})
    rng = np.random.default_rng(3)
    ref_x = rng.normal(size=(500, 2))
    ref = build_reference({"a": ref_x[:, 0], "b": ref_x[:, 1]})
    ack = gw.push(make_bundle(gw.signer, 2, reference=ref, feature_names=["a", "b"]))
    assert ack["ok"], ack
    for i in range(ROWS):
        body = {"model": NAME, "inputs": [[float(i), 1.0]], "cache": False}
        assert gw.agent.post("/api/v1/inference", body).status_code == 200

    db = str(gw.agent.state_dir / "drift_checkpoint.db")
    deadline = time.time() + 10
    while _checkpointed_rows(db) < ROWS and time.time() < deadline:
        time.sleep(0.1)
    assert _checkpointed_rows(db) == ROWS, "the open window was not checkpointed"

    drift_topic = topics.up(gw.id, topics.DRIFT)
    seen = len(gw.listener.on(drift_topic))
    gw.agent.kill()  # SIGKILL: no graceful flush of the running window
    gw.agent.start()
    deadline = time.time() + 30
    window = None
    while window is None and time.time() < deadline:
        for raw in gw.listener.on(drift_topic)[seen:]:
            doc = json.loads(raw)
            if doc.get("type") == "drift_window" and doc["model"] == NAME:
                window = doc
        time.sleep(0.1)
    assert window is not None, "the open window was lost with the process"
    assert window["n"] == ROWS and window["version"] == "2"
    assert sum(window["features"]["a"]["counts"]) == ROWS
    assert window["features"]["a"]["max"] == float(ROWS - 1)
    assert "restored from the checkpoint" in gw.agent.log_text()
    # Restored once: the checkpoint was cleared, the new process starts its own window.
    assert _checkpointed_rows(db) == 0
