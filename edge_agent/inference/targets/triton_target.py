"""A Triton (or any KServe v2) server as an inference target, over HTTP or gRPC.

``http://host:8000`` or ``host:8000`` speaks KServe v2 over HTTP (tritonclient.http.aio,
aiohttp underneath, one pooled session); ``grpc://host:8001`` speaks it over gRPC
(tritonclient.grpc.aio). The client is made lazily inside the running event loop and kept.

The "cloud serverless" target of the specification is the same protocol with its own
cost and cold-start profile: ``TritonTarget(url, name="serverless", cost=..., cold_start_ms=...)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from edge_agent.inference.targets.remote_target import TargetError

TRITONCLIENT_MISSING = (
    "cloud Triton targets need tritonclient on the gateway: "
    "pip install 'farmiq-edge[edge-cloud]' (or tritonclient[grpc] for grpc:// URLs)"
)

log = logging.getLogger(__name__)

_LINK_STATUS = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED",
                "502", "503", "504"}  # fmt: skip


def parse_url(url: str) -> tuple[str, str]:
    """(protocol, "host:port")"""
    if url.startswith("grpc://"):
        return "grpc", url[len("grpc://") :].rstrip("/")
    if url.startswith("http://"):
        return "http", url[len("http://") :].rstrip("/")
    if url.startswith("https://"):
        raise ValueError("https Triton URLs are not supported yet; use a TLS-terminating proxy")
    return "http", url.rstrip("/")


def _client_module(protocol: str) -> Any:
    """tritonclient's asyncio module for ``protocol``, or None when it is not installed."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc.aio as mod
        else:
            import tritonclient.http.aio as mod  # type: ignore[no-redef]
    except ImportError:
        return None
    return mod


class TritonTarget:
    def __init__(
        self,
        url: str,
        *,
        name: str = "cloud",
        cost: float = 1.0,
        cold_start_ms: float = 0.0,
        model_names: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.protocol, self.host = parse_url(url)
        self.name = name
        self.cost = cost
        self.cold_start_ms = cold_start_ms
        self.model_names = model_names or {}
        self._client: Any = None
        # Imported now, not on the first offload: tritonclient's import (aiohttp, and
        # gevent for http) takes hundreds of ms on a small gateway, which the first
        # request's latency budget would pay. The client itself needs the running loop.
        self._mod: Any = _client_module(self.protocol)
        self._unknown: set[str] = set()  # models the server said it does not have
        self.tracer: Any = None  # set by Router.trace when OTEL_* turn traces on

    def configured(self) -> bool:
        return True

    def holds(self, model: str) -> bool:
        # We learn it from the server's answers: a "not found" marks the model, a later
        # success clears it (after a publish).
        return model not in self._unknown

    def _ensure_client(self) -> Any:
        if self._client is None:
            if self._mod is None:  # tritonclient is in the optional `edge-cloud` extra
                raise TargetError("unavailable", f"{self.name}: {TRITONCLIENT_MISSING}")
            self._client = self._mod.InferenceServerClient(self.host)
        return self._client

    def _make_inputs(self, inputs: dict[str, np.ndarray]) -> list[Any]:
        from tritonclient.utils import np_to_triton_dtype

        out = []
        for k, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            t = self._mod.InferInput(k, list(arr.shape), np_to_triton_dtype(arr.dtype))
            if self.protocol == "http":
                t.set_data_from_numpy(arr, binary_data=True)
            else:
                t.set_data_from_numpy(arr)
            out.append(t)
        return out

    async def infer(
        self,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        timeout_s: float,
    ) -> dict[str, np.ndarray]:
        client = self._ensure_client()
        remote = self.model_names.get(model, model)
        if self.protocol == "http":
            req_outputs = [self._mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
        else:
            req_outputs = [self._mod.InferRequestedOutput(o) for o in outputs]
        call = (client, model, remote, version, inputs, outputs, req_outputs, timeout_s)
        if self.tracer is not None:
            from opentelemetry.trace import SpanKind

            from farmiq.tracing import inject

            with self.tracer.start_as_current_span(
                "remote.infer",
                kind=SpanKind.CLIENT,
                attributes={"farmiq.target": self.name, "farmiq.model": remote, "server.address": self.host},
            ):  # fmt: skip
                return await self._infer(*call, inject())
        return await self._infer(*call, None)

    async def _infer(
        self,
        client: Any,
        model: str,
        remote: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        req_outputs: list[Any],
        timeout_s: float,
        headers: dict[str, str] | None,
    ) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        try:
            result = await asyncio.wait_for(
                client.infer(
                    remote, self._make_inputs(inputs), model_version=version,
                    outputs=req_outputs, headers=headers,
                ),
                timeout_s,
            )  # fmt: skip
        except TimeoutError:
            raise TargetError(
                "link", f"{self.name}: no answer within {timeout_s * 1000:.0f} ms"
            ) from None
        except InferenceServerException as exc:
            status = str(exc.status())
            msg = exc.message() or str(exc)
            if status in _LINK_STATUS or "connect" in msg.lower():
                raise TargetError("link", f"{self.name}: {msg}") from None
            if (
                "unknown model" in msg.lower()
                or "not found" in msg.lower()
                or "unavailable model" in msg.lower()
            ):
                self._unknown.add(model)
                raise TargetError("unavailable", f"{self.name}: {msg}") from None
            raise TargetError("model", f"{self.name}: {msg}") from None
        except (OSError, ConnectionError) as exc:
            raise TargetError("link", f"{self.name}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # aiohttp/grpc transport errors that are not OSError
            name = type(exc).__name__
            if "Client" in name or "Connection" in name or "Server" in name or "Rpc" in name:
                raise TargetError("link", f"{self.name}: {name}: {exc}") from None
            raise
        self._unknown.discard(model)
        return {o: result.as_numpy(o) for o in outputs}

    def forget_unknown(self) -> None:
        self._unknown.clear()

    async def close(self) -> None:
        if self._client is not None:
            try:
                await self._client.close()
            except Exception:  # closing a dead connection must not fail a shutdown
                log.debug("closing triton client failed", exc_info=True)
            self._client = None
