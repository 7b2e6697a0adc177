"""What gateways report, turned into alerts once per condition: MCU faults and open
breakers from health reports, concept drift at once, and no alert for a report that the
ingest would reject."""

from __future__ import annotations

import json
from typing import Any

import orjson

from control_plane.alerts.bus import AlertBus
from control_plane.alerts.gateway_alerts import GatewayAlerts


def _bus() -> tuple[AlertBus, list[tuple[str, dict[str, Any]]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    return AlertBus(mqtt_publish=lambda t, b: sent.append((t, json.loads(b)))), sent


def test_mcu_fault_and_breaker_open_alert_when_they_start_not_while_they_hold() -> None:
    bus, sent = _bus()
    g = GatewayAlerts(bus, farm_of=lambda d: "farm-9")
    healthy = {"models": {}, "breakers": {"triton": {"state": "closed"}}, "mcus": {"m0": {}}}
    faulty = {"models": {}, "breakers": {"triton": {"state": "open"}},
              "mcus": {"m0": {"fault": "watchdog-reset"}}}  # fmt: skip
    for doc in (healthy, faulty, faulty, faulty):
        g.on_health("gw-h1", orjson.dumps(doc))
    assert sorted(t for t, _ in sent) == [
        "farmiq/v1/cp/alert/breaker_open",
        "farmiq/v1/cp/alert/mcu_fault",
    ]
    mcu = next(a for _, a in sent if a["kind"] == "mcu_fault")
    assert mcu["severity"] == "critical" and mcu["details"]["fault"] == "watchdog-reset"
    assert mcu["farm_id"] == "farm-9" and mcu["device_id"] == "gw-h1"
    g.on_health("gw-h1", orjson.dumps(healthy))  # cleared...
    bus.forget("breaker_open:gw-h1:triton")
    g.on_health("gw-h1", orjson.dumps(faulty))  # ...and open again: a new alert
    assert [a["kind"] for _, a in sent].count("breaker_open") == 2


def test_concept_drift_alert_needs_the_reporting_gateways_own_id() -> None:
    bus, sent = _bus()
    g = GatewayAlerts(bus)
    ev = {"type": "concept_drift", "model": "barn", "detector": "adwin", "state": "drift",
          "previous": "stable", "n_seen": 500, "estimate": 0.3, "at": 1.0}  # fmt: skip
    g.on_drift("gw-c1", orjson.dumps(ev))  # no device_id: the drift ingest rejects it too
    g.on_drift("gw-c1", orjson.dumps({**ev, "device_id": "gw-other"}))
    assert sent == []
    g.on_drift("gw-c1", orjson.dumps({**ev, "device_id": "gw-c1"}))
    ((topic, alert),) = sent
    assert topic == "farmiq/v1/cp/alert/concept_drift" and alert["model"] == "barn"
    g.on_drift("gw-c1", orjson.dumps({**ev, "device_id": "gw-c1", "state": "stable"}))
    assert len(sent) == 1
