"""OpenTelemetry from a live control plane, configured only by OTEL_* variables: the real
OTLP/HTTP exporter sends to a receiver in this test, which decodes the protobuf with
opentelemetry-proto. An API request continues the caller's W3C traceparent; a rollout's
bundle build, its scheduler steps and a drift ingest have spans; the log line of the
request carries the trace id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.procs import ENV, ControlPlaneProc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = ExportTraceServiceRequest.FromString(body)
                for rs in req.resource_spans:
                    res = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            outer.spans.append({
                                "name": s.name, "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(), "kind": s.kind,
                                "attrs": {a.key: a.value for a in s.attributes},
                                "service": res.get("service.name"),
                            })  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, pred: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hits = [s for s in self.spans if pred(s)]
            if hits:
                return hits
            time.sleep(0.1)
        names = sorted({s["name"] for s in self.spans})
        raise AssertionError(f"no such span; seen: {names}")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.server.shutdown()


def test_spans_reach_an_otlp_receiver_and_continue_the_callers_trace(
    tmp_path: Path, mqtt_port: int, receiver: OtlpReceiver, barn_model: Any
) -> None:
    cp = ControlPlaneProc(tmp_path / "cp", mqtt_port)
    cp.env = {**ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
              "OTEL_SERVICE_NAME": "farmiq-cp-tracing-test", "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip
    cp.start()
    try:
        with cp.client() as c:
            r = c.get(
                "/api/v1/trust-root", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
            )
            assert r.status_code == 200
            r = c.post(
                "/api/v1/models/register",
                files={"file": ("m.onnx", barn_model.onnx_bytes)},
                data={"name": "traced-barn", "meta": json.dumps({"task": "classification"})},
            )
            assert r.status_code == 200, r.text
            r = c.post("/api/v1/rollouts", json={"model": "traced-barn", "version": 1,
                       "targeting": {"devices": ["gw-traced-1"]}, "soak_s": 3600})  # fmt: skip
            assert r.status_code == 200, r.text
        in_trace = receiver.wait_for(lambda s: s["trace_id"] == TRACE_ID)
        served = [s for s in in_trace if s["parent"] == PARENT_ID]
        assert len(served) == 1, [(s["name"], s["attrs"].keys()) for s in in_trace]
        api = served[0]
        assert api["name"] == "GET /api/v1/trust-root", [s["name"] for s in in_trace]
        assert api["kind"] == 2  # SERVER
        assert api["attrs"]["http.response.status_code"].int_value == 200
        assert {"fastapi.endpoint"} <= {s["name"] for s in in_trace}  # children of it
        assert api["service"] == "farmiq-cp-tracing-test"
        build = receiver.wait_for(lambda s: s["name"] == "bundle.build")[0]
        post = receiver.wait_for(lambda s: s["name"] == "POST /api/v1/rollouts")[0]
        assert build["trace_id"] == post["trace_id"]  # the build runs inside the request
        receiver.wait_for(lambda s: s["name"] == "rollout.step")
    finally:
        cp.stop()
    lines = [json.loads(x) for x in cp.log_text().splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("route") == "/api/v1/trust-root"]
    assert access and access[0]["trace_id"] == TRACE_ID
