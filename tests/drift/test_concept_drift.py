"""Label feedback: river's detectors, their state changes, and the HTTP handler."""

from __future__ import annotations

import json
import random

from edge_agent.telemetry.concept_drift import ADWIN, DDM, ConceptDriftMonitor


def test_ddm_and_adwin_detect_exactly_where_river_does() -> None:
    from river.drift import ADWIN as RiverADWIN
    from river.drift.binary import DDM as RiverDDM

    rng = random.Random(7)
    bits = rng.choices([0, 1], k=1500, weights=[0.9, 0.1]) + rng.choices(
        [0, 1], k=1500, weights=[0.5, 0.5]
    )
    ours, theirs = DDM(), RiverDDM()
    a, b = [], []
    for x in bits:
        ours.update(x)
        theirs.update(x)
        a.append((ours.warning_detected, ours.drift_detected))
        b.append((theirs.warning_detected, theirs.drift_detected))
    assert a == b and any(d for _, d in a)

    errs = [abs(rng.gauss(0, 1)) for _ in range(1500)] + [abs(rng.gauss(3, 1)) for _ in range(1500)]
    oa, ra = ADWIN(), RiverADWIN()
    a2, b2 = [], []
    for e in errs:
        oa.update(e)
        ra.update(e)
        a2.append(oa.drift_detected)
        b2.append(ra.drift_detected)
    assert a2 == b2 and any(a2)


def test_classification_feedback_reports_warning_then_drift() -> None:
    false_alarms, detected, last = 0, 0, None
    for seed in range(10):
        m = ConceptDriftMonitor()
        rng = random.Random(seed)
        changes = []
        for i in range(1600):  # 10% errors, then the model goes wrong half the time
            p_ok = 0.9 if i < 1000 else 0.5
            for c in m.feedback("barn", "healthy", "healthy" if rng.random() < p_ok else "sick"):
                changes.append((i, c))
        drifts = [i for i, c in changes if c.state == "drift"]
        false_alarms += sum(1 for i in drifts if i < 1000)
        if any(1000 <= i < 1200 for i in drifts):
            detected += 1
            last = changes
    assert false_alarms <= 1
    assert detected >= 9
    assert last is not None
    states = [c.state for _, c in last]
    first = states.index("drift")
    d = last[first][1]
    assert d.detector == "ddm" and d.previous == "warning" and d.n_seen > 1000
    msg = d.to_message("gw-1")
    assert msg["type"] == "concept_drift" and msg["key"].startswith("gw-1/concept/barn/ddm/")


def test_regression_feedback_uses_adwin_on_absolute_error() -> None:
    m = ConceptDriftMonitor()
    rng = random.Random(4)
    changes = []
    for _ in range(1000):
        w = rng.gauss(2000, 50)
        changes += m.feedback("weight", w + rng.gauss(0, 20), w, kind="regression")
    assert changes == []
    for _ in range(500):  # predictions now 150 g off
        w = rng.gauss(2000, 50)
        changes += m.feedback("weight", w + 150 + rng.gauss(0, 20), w, kind="regression")
    assert [c.state for c in changes][:1] == ["drift"]
    assert changes[0].detector == "adwin"


def test_http_handler_validates_and_reports() -> None:
    m = ConceptDriftMonitor()
    status, body = m.handle_request(
        json.dumps(
            {
                "model": "barn",
                "items": [{"prediction": 1, "truth": 1}, {"prediction": 0, "truth": 1}],
            }
        ).encode()
    )
    assert status == 200 and body["accepted"] == 2
    assert body["status"]["barn:classification"]["n_seen"] == 2
    assert m.handle_request(b"{")[0] == 400
    assert m.handle_request(b'{"model": "barn"}')[0] == 400
    status, body = m.handle_request(
        b'{"model": "w", "kind": "regression", "prediction": "heavy", "truth": 3}'
    )
    assert status == 400 and "numeric" in body["error"]
    assert (
        m.handle_request(b'{"model": "w", "kind": "ranking", "prediction": 1, "truth": 1}')[0]
        == 400
    )
