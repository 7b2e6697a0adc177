"""The KServe v2 / Open Inference Protocol on the agent's local API, so tritonclient and
any KServe client talk to a gateway as they talk to Triton.

Routes: ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``,
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready`` and
``POST /v2/models/{name}/infer`` with JSON tensors or the binary tensor extension (an
``Inference-Header-Content-Length`` header; input tensors with
``parameters.binary_data_size`` follow the JSON header in order; outputs come back binary
when asked with ``binary_data`` / ``binary_data_output``). Requests go through the same
router as ``/api/v1/inference`` (routing, validation, metrics, drift, shadow, rollout
health). Triton's ``parameters.timeout`` (microseconds) becomes the latency budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from edge_agent.api.errors import status_of
from edge_agent.api.local_api import ApiError, LocalApi, Request, Response, json_response
from edge_agent.inference.router import RoutingError
from farmiq import __version__

if TYPE_CHECKING:
    from edge_agent.inference.router import Router
    from edge_agent.models.serving import LoadedModel, ModelSet

# KServe v2 tensor datatypes <-> numpy (BYTES is not served: gateway models are numeric)
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NAMES = {v: k for k, v in DATATYPES.items()}
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "litert": "tensorflow_lite"}
HEADER_LENGTH = b"inference-header-content-length"
MAX_TENSORS = 64


def datatype_of(dtype: Any) -> str:
    return _NAMES.get(np.dtype(dtype), "BYTES")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _tensor_meta(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype_of(spec.dtype),
        "shape": [-1 if d is None else int(d) for d in spec.shape],
    }


def model_metadata(m: LoadedModel) -> dict[str, Any]:
    man = m.manifest
    return {
        "name": m.name,
        "versions": [str(m.version)],
        "platform": PLATFORMS.get(man.runtime, man.runtime),
        "inputs": [_tensor_meta(s) for s in man.inputs],
        "outputs": [_tensor_meta(s) for s in man.outputs],
    }


def _split(req: Request) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary part that follows it (binary tensor extension)."""
    raw = req.header(HEADER_LENGTH)
    body = req.body
    if raw is None:
        return _json(body), b""
    try:
        n = int(raw)
    except ValueError:
        raise _bad("Inference-Header-Content-Length must be an integer") from None
    if not 0 < n <= len(body):
        raise _bad("Inference-Header-Content-Length does not fit the body")
    return _json(body[:n]), body[n:]


def _json(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"request is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise _bad("request must be a JSON object")
    return doc


def _shape(t: dict[str, Any]) -> tuple[int, ...]:
    shape = t.get("shape")
    if (
        type(shape) is not list
        or len(shape) > 8
        or not all(type(d) is int and 0 <= d <= 1 << 24 for d in shape)
    ):
        raise _bad(f"input {t.get('name')!r}: 'shape' must be a list of non-negative integers")
    return tuple(shape)


def parse_inputs(doc: dict[str, Any], binary: bytes) -> dict[str, np.ndarray]:
    tensors = doc.get("inputs")
    if type(tensors) is not list or not tensors or len(tensors) > MAX_TENSORS:
        raise _bad("'inputs' must be a non-empty list of tensors")
    out: dict[str, np.ndarray] = {}
    pos = 0
    for t in tensors:
        if type(t) is not dict or type(t.get("name")) is not str:
            raise _bad("each input needs a 'name'")
        name = t["name"]
        dtype = DATATYPES.get(t.get("datatype"))  # type: ignore[arg-type]
        if dtype is None:
            raise _bad(f"input {name!r}: unsupported datatype {t.get('datatype')!r}")
        shape = _shape(t)
        count = int(np.prod(shape, dtype=np.int64))
        params = t.get("parameters")
        size = params.get("binary_data_size") if type(params) is dict else None
        try:
            if size is not None:
                if type(size) is not int or size < 0 or pos + size > len(binary):
                    raise _bad(f"input {name!r}: binary_data_size does not fit the body")
                if size != count * dtype.itemsize:
                    raise _bad(f"input {name!r}: {size} bytes do not make shape {list(shape)}")
                arr = np.frombuffer(binary, dtype=dtype, count=count, offset=pos).reshape(shape)
                pos += size
            else:
                data = t.get("data")
                if type(data) is not list:
                    raise _bad(f"input {name!r}: 'data' must be a list")
                arr = np.asarray(data, dtype=dtype)
                if arr.size != count:
                    raise _bad(f"input {name!r}: {arr.size} values do not make {list(shape)}")
                arr = arr.reshape(shape)
        except (ValueError, TypeError, OverflowError) as exc:
            raise _bad(f"input {name!r}: {exc}") from None
        out[name] = arr
    if pos != len(binary):
        raise _bad("binary data left over after the last input")
    return out


def _wanted(doc: dict[str, Any], names: list[str]) -> list[tuple[str, bool]]:
    """(output name, as binary) for each output to return."""
    params = doc.get("parameters")
    all_binary = type(params) is dict and params.get("binary_data_output") is True
    asked = doc.get("outputs")
    if asked is None:
        return [(n, all_binary) for n in names]
    if type(asked) is not list:
        raise _bad("'outputs' must be a list")
    out = []
    for o in asked:
        if type(o) is not dict or o.get("name") not in names:
            raise _bad(f"unknown output {o.get('name') if type(o) is dict else o!r}")
        p = o.get("parameters")
        out.append((o["name"], (type(p) is dict and p.get("binary_data") is True) or all_binary))
    return out


def _budget(doc: dict[str, Any]) -> float | None:
    params = doc.get("parameters")
    timeout = params.get("timeout") if type(params) is dict else None
    if (type(timeout) is int or type(timeout) is float) and timeout > 0:
        return float(timeout) / 1000.0  # microseconds -> ms
    return None


def infer_response(
    name: str, version: int, outputs: dict[str, np.ndarray], wanted: list[tuple[str, bool]],
    request_id: Any = None,
) -> Response:  # fmt: skip
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out_name, binary in wanted:
        a = np.asarray(outputs[out_name])
        t: dict[str, Any] = {
            "name": out_name,
            "datatype": datatype_of(a.dtype),
            "shape": list(a.shape),
        }
        if binary:
            blob = np.ascontiguousarray(a).tobytes()
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = a.ravel().tolist()
        tensors.append(t)
    doc: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": tensors}
    if type(request_id) is str:
        doc["id"] = request_id
    header = orjson.dumps(doc)
    if not blobs:
        return Response(header)
    return Response(
        header + b"".join(blobs),
        content_type=b"application/octet-stream",
        headers=[(b"inference-header-content-length", b"%d" % len(header))],
    )


def add_routes(
    api: LocalApi, router: Router, models: ModelSet, ready: Callable[[], tuple[bool, str]]
) -> None:
    def model(req: Request) -> LoadedModel:
        m = models.get(req.params["name"])
        if m is None:
            raise ApiError(404, f"unknown model {req.params['name']!r}")
        return m

    @api.route("GET", "/v2")
    async def server_metadata(req: Request) -> Response:
        return json_response(
            {"name": "farmiq-agent", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    @api.route("GET", "/v2/health/live")
    async def live(req: Request) -> Response:
        return json_response({"live": True})

    @api.route("GET", "/v2/health/ready")
    async def server_ready(req: Request) -> Response:
        ok, why = ready()
        return json_response({"ready": ok, "reason": why}, 200 if ok else 503)

    @api.route("GET", "/v2/models/{name}")
    async def metadata(req: Request) -> Response:
        return json_response(model_metadata(model(req)))

    @api.route("GET", "/v2/models/{name}/ready")
    async def model_ready(req: Request) -> Response:
        m = model(req)
        return json_response({"name": m.name, "ready": m.warm}, 200 if m.warm else 503)

    @api.route("POST", "/v2/models/{name}/infer")
    async def infer(req: Request) -> Response:
        m = model(req)
        doc, binary = _split(req)
        arrays = parse_inputs(doc, binary)
        wanted = _wanted(doc, [o.name for o in m.manifest.outputs])
        try:
            res = await router.infer(m.name, arrays, budget_ms=_budget(doc))
        except RoutingError as exc:
            status = status_of(exc)
            raise ApiError(400 if status == 422 else status, exc.message, **exc.extra) from None
        return infer_response(res.model, res.version, res.outputs, wanted, doc.get("id"))
