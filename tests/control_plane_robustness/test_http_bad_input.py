"""Bad input to the operator API gets a 4xx that says what is wrong, never a 500.

A deterministic sweep sends every operation in the control plane's own OpenAPI schema a
fixed set of bad requests (path tricks, wrong JSON types, garbage and oversized bodies),
and targeted tests pin the bugs the sweep and schemathesis found.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from control_plane.mqtt_bus import MqttBus
from control_plane.settings import CpMqtt

# A device id no MQTT topic can carry: Mosquitto drops a client that publishes to a topic
# with a C1 control character, and paho re-sends the message after every reconnect.
BAD_IDS = ["a\x85b", "a/b", "a+b", "x" * 65, "tab\there"]

PATH_TRICKS = ["..", "%2e%2e%2f%2e%2e", "x" * 300, "a%00b", "a%C2%85b", "%F0%9F%90%94", "'\"", "-1"]
BODIES: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"\x00\xffnot json", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'"text"', "application/json"),
    (b"[" * 3000 + b"]" * 3000, "application/json"),
    (b"--x\r\nbroken multipart", "multipart/form-data; boundary=x"),
]
WRONG_VALUES: list[Any] = [{"nested": [1]}, "text", -1e308, None, "x" * 5000, [None]]
# Answers that are right for a control plane without a Triton server or enrollment.
UNAVAILABLE_OK = ("/api/v1/cloud", "/ready")


def _operations(c: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    spec = c.get("/openapi.json").json()
    ops = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path.startswith(("/dashboard", "/metrics")):
                continue
            ops.append((method.upper(), path, op))
    return ops


def _body_props(op: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    content = (op.get("requestBody") or {}).get("content", {})
    schema = (content.get("application/json") or {}).get("schema") or {}
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("anyOf", [])), None)
    if ref:
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return list((schema.get("properties") or {}).keys())


def _problem(r: httpx.Response, what: str) -> str | None:
    if r.status_code == 503 and r.url.path.startswith(UNAVAILABLE_OK):
        return None
    if r.status_code >= 500:
        return f"{what}: {r.status_code} {r.text[:200]}"
    if r.status_code >= 400 and not r.text.strip():
        return f"{what}: {r.status_code} with an empty body says nothing"
    return None


def test_every_operation_answers_bad_input_with_a_4xx(control_plane) -> None:
    with control_plane.client() as c:
        # Feast's first use (imports and apply) takes half a minute on a loaded 2-core
        # machine: pay it before the sweep, whose requests get 30 s each.
        assert c.post("/api/v1/features/register", timeout=180).status_code == 200
        c.timeout = httpx.Timeout(30)
        spec = c.get("/openapi.json").json()
        deadline = time.time() + 60
        problems: list[str | None] = []
        for method, path, op in _operations(c):
            assert time.time() < deadline, "the sweep took over a minute"
            for trick in PATH_TRICKS if "{" in path else [None]:
                url = path
                if trick is not None:
                    url = "/".join(trick if seg.startswith("{") else seg for seg in path.split("/"))
                what = f"{method} {url}"
                if method in ("POST", "PUT", "PATCH"):
                    for body, ctype in BODIES:
                        r = c.request(method, url, content=body, headers={"content-type": ctype})
                        problems.append(_problem(r, f"{what} body {body[:20]!r}"))
                    for prop in _body_props(op, spec):
                        for wrong in WRONG_VALUES:
                            r = c.request(method, url, json={prop: wrong})
                            problems.append(_problem(r, f"{what} {prop}={str(wrong)[:20]!r}"))
                else:
                    r = c.request(method, url)
                    problems.append(_problem(r, what))
                for q in op.get("parameters", []):
                    if q.get("in") == "query":
                        r = c.request(method, url, params={q["name"]: "\x85" + "z" * 2000})
                        problems.append(_problem(r, f"{what} ?{q['name']}=junk"))
        found = [p for p in problems if p]
        assert not found, f"{len(found)} bad answers:\n" + "\n".join(found[:40])


@pytest.mark.parametrize("bad", BAD_IDS)
def test_device_ids_no_topic_can_carry_are_refused_naming_the_problem(control_plane, bad) -> None:
    with control_plane.client() as c:
        attempts = [
            c.post("/api/v1/deployments", json={"model": "barn", "devices": ["gw-ok", bad]}),
            c.post("/api/v1/actuators", json={"device_id": bad, "actuator": "fan", "value": 0.5}),
            c.post(
                "/api/v1/rollouts",
                json={"model": "barn", "targeting": {"devices": [bad]}, "start": False},
            ),
            c.post(
                f"/api/v1/features/publish/{quote(bad, safe='')}",
                json={"entities": {"barn_id": ["b1"]}},
            ),
        ]
    for r in attempts:
        if r.status_code == 404 and "/" in bad:
            continue  # '/' splits the path: no such route, which is also right
        assert r.status_code == 422, f"{r.request.url}: {r.status_code} {r.text[:300]}"
        assert "device" in r.text, r.text  # the message or the field it names


def test_the_broker_connection_refuses_topics_the_broker_would_drop_it_for(mqtt_port) -> None:
    bus = MqttBus(CpMqtt(port=mqtt_port, client_id=f"test-bus-{uuid.uuid4().hex[:8]}"))
    assert bus.start(), "no broker"
    try:
        for bad in ["farmiq/v1/gw/a\x85b/down/features", "farmiq/v1/gw/a\x01/down/x", "a/#"]:
            with pytest.raises(ValueError, match="topic"):
                bus.publish(bad, b"{}")
        bus.publish("farmiq/v1/gw/gw-ok/down/features", b"{}")
        time.sleep(1.5)  # a refused packet would have cut the connection by now
        assert bus.connected.is_set()
    finally:
        bus.stop()


def test_materialize_with_start_after_end_is_a_422(control_plane) -> None:
    with control_plane.client() as c:
        r = c.post(
            "/api/v1/features/materialize",
            json={"start": "2030-01-01T00:00:00", "end": "2020-01-01T00:00:00+00:00"},
        )
    assert r.status_code == 422, r.text
    assert "after" in r.json()["detail"]


@pytest.mark.parametrize("action", ["pause", "resume", "abort", "rollback"])
def test_actions_on_a_missing_rollout_answer_404_at_once(control_plane, action) -> None:
    t0 = time.monotonic()
    with control_plane.client() as c:
        r = c.post(f"/api/v1/rollouts/no-such-rollout/{action}")
    assert r.status_code == 404, r.text
    assert "no-such-rollout" in r.text
    assert time.monotonic() - t0 < 5  # it waited out a 35 s lease loop before
