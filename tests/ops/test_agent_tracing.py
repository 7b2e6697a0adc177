"""OpenTelemetry from live gateways, configured only by OTEL_* variables (issue 16, item 2):
the real OTLP/HTTP exporter sends to a receiver in this test (tests/ops/
test_control_plane_tracing.py), which decodes the protobuf with opentelemetry-proto.

One trace from the caller to the cloud: a request carrying a W3C traceparent reaches
gateway A, whose model is served by its cloud target; A's API span continues the caller's
trace, its inference span carries the routing decision, its remote call is a client span
that sends the traceparent on. The cloud target here is a second gateway's KServe v2 API
(the same protocol Triton speaks, and a server that reports its spans), so the receiving
side's server span shows the trace arrived. A gateway with tracing off sends no spans."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from farmiq import topics
from farmiq.bundle.signing import Signer
from farmiq.bundle.trust import TrustRoot
from tests.edge_robustness.helpers import NAME, Gateway, make_bundle
from tests.ops.test_control_plane_tracing import PARENT_ID, TRACE_ID, OtlpReceiver, receiver
from tests.security.helpers import Listener
from tests.support.procs import ENV, AgentProc

__all__ = ["receiver"]  # the fixture, shared with the control plane's tracing test


def _gateway(
    agent_factory: Callable[..., AgentProc],
    device_id: str,
    trust: dict[str, Any],
    env: dict[str, str],
    mqtt_port: int,
    signer: Signer,
    **settings: Any,
) -> Gateway:
    agent = agent_factory(device_id, trust, start=False, **settings)
    agent.env = env
    agent.start()
    agent.wait_for(lambda s: s["broker_connected"], what="broker")
    listener = Listener(mqtt_port, [topics.up(device_id, topics.INSTALL_ACK)])
    return Gateway(agent, listener, signer)


def test_one_trace_runs_from_the_caller_through_a_gateway_to_its_cloud_target(
    agent_factory: Callable[..., AgentProc],
    device_id: str,
    mqtt_port: int,
    receiver: OtlpReceiver,
) -> None:
    signer = Signer.generate()
    trust = TrustRoot.for_signers([signer], director=[Signer.generate()]).model_dump(mode="json")
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    cloud = _gateway(
        agent_factory, f"{device_id}-cloud", trust,
        {**ENV, **otel, "OTEL_SERVICE_NAME": "cloud-side"}, mqtt_port, signer,
    )  # fmt: skip
    barn = _gateway(
        agent_factory, device_id, trust,
        {**ENV, **otel, "OTEL_SERVICE_NAME": "barn-gateway"}, mqtt_port, signer,
        cloud={"triton_url": cloud.agent.url, "timeout_ms": 5000},
    )  # fmt: skip
    quiet = _gateway(
        agent_factory, f"{device_id}-quiet", trust,
        {**ENV, "OTEL_SERVICE_NAME": "quiet-gateway"}, mqtt_port, signer,
    )  # fmt: skip
    try:
        assert cloud.push(make_bundle(signer, 3))["ok"]  # the cloud's model: y = 3x
        # The barn's bundle names the cloud as its only target.
        serving = {"targets": ["cloud"], "cloud_model": NAME}
        assert barn.push(make_bundle(signer, 1, serving=serving))["ok"]
        assert quiet.push(make_bundle(signer, 1))["ok"]

        r = httpx.post(
            f"{barn.agent.url}/api/v1/inference",
            content=json.dumps({"model": NAME, "inputs": [[1.0, 2.0]]}),
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["target"] == "cloud" and doc["outputs"]["y"] == [[3.0, 6.0]], doc
        body = {"model": NAME, "inputs": [[1.0, 2.0]]}
        assert quiet.agent.post("/api/v1/inference", body).status_code == 200

        def one(name: str, service: str) -> dict[str, Any]:
            (s,) = receiver.wait_for(
                lambda s: (
                    s["name"] == name and s["service"] == service and s["trace_id"] == TRACE_ID
                )
            )
            return s

        api = one("POST /api/v1/inference", "barn-gateway")
        assert api["parent"] == PARENT_ID  # the caller's span
        inference = one("inference", "barn-gateway")
        assert inference["attrs"]["farmiq.target"].string_value == "cloud"
        assert inference["attrs"]["farmiq.model"].string_value == NAME
        remote = one("remote.infer", "barn-gateway")
        # The cloud side's server span: the traceparent crossed the HTTP call.
        served = one("POST /v2/models/{name}/infer", "cloud-side")
        assert inference["parent"] == api["span_id"] and remote["parent"] == inference["span_id"]
        assert served["parent"] == remote["span_id"]
        assert not any(s["service"] == "quiet-gateway" for s in receiver.spans)
    finally:
        for gw in (cloud, barn, quiet):
            gw.close()
