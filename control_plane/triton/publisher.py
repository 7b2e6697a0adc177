"""Publish promoted models to the cloud Triton, so gateways can always escalate to the
version they run.

On promotion: fetch the ONNX file from the registry, write the model repository entry
(``export.write_model_entry``), then load it through Triton's repository API (explicit
model control: ``POST /v2/repository/models/{name}/load``). Also answers the cloud
inference view: which models Triton has, their readiness, statistics, and a warm-up call.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from control_plane.triton.export import Variant, write_model_entry
from farmiq.bundle.builder import onnx_io_specs
from farmiq.bundle.format import Serving

log = logging.getLogger(__name__)


class TritonUnavailable(RuntimeError):
    pass


class TritonPublisher:
    def __init__(
        self,
        url: str,
        repository: Path,
        *,
        variant: Variant = "python",
        kind: Literal["KIND_GPU", "KIND_CPU"] | None = None,
        registry: Any = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.startswith("grpc://"):
            raise ValueError(
                "the publisher speaks Triton's HTTP repository API; give the http:// URL"
            )
        self.host = self.url.removeprefix("http://")
        self.repository = repository
        self.variant = variant
        self.kind = kind
        self.registry = registry
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self.published: dict[str, int] = {}
        self.last_error: str | None = None

    def _client(self) -> Any:
        import tritonclient.http as th

        return th.InferenceServerClient(
            self.host, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    def _call(self, fn: str, *args: Any, **kw: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        client = self._client()
        try:
            return getattr(client, fn)(*args, **kw)
        except InferenceServerException as exc:
            msg = exc.message() or str(exc)
            if "connect" in msg.lower() or "refused" in msg.lower():
                raise TritonUnavailable(f"Triton at {self.url} is unreachable: {msg}") from None
            raise
        except (OSError, ConnectionError) as exc:
            raise TritonUnavailable(f"Triton at {self.url} is unreachable: {exc}") from None
        finally:
            client.close()

    # -- publishing --------------------------------------------------------------------
    def publish_bytes(
        self, name: str, version: int, model_bytes: bytes, serving: Serving | None = None
    ) -> dict[str, Any]:
        inputs, outputs = onnx_io_specs(model_bytes)
        with self._lock:
            write_model_entry(
                self.repository, name, version, model_bytes, inputs, outputs, serving,
                variant=self.variant, kind=self.kind,
            )  # fmt: skip
            t0 = time.perf_counter()
            self._call("load_model", name)
            self.published[name] = version
        ms = (time.perf_counter() - t0) * 1000
        log.info("published %s v%s to Triton %s (load %.0f ms)", name, version, self.url, ms)
        return {
            "model": name,
            "version": version,
            "load_ms": round(ms, 1),
            "ready": self.ready(name, version),
        }

    def publish(self, name: str, version: int) -> dict[str, Any]:
        if self.registry is None:
            raise RuntimeError("no registry to read the model from")
        return self.publish_bytes(name, version, self.registry.model_bytes(name, version))

    def on_promoted(self, name: str, version: int) -> None:
        """The promotion hook. Never raises: a cloud outage must not fail a promotion."""
        try:
            self.publish(name, version)
            self.last_error = None
        except Exception as exc:
            self.last_error = f"{name} v{version}: {exc}"
            log.warning("could not publish %s v%s to Triton: %s", name, version, exc)

    def unload(self, name: str) -> None:
        self._call("unload_model", name)

    # -- the cloud inference view --------------------------------------------------------
    def server(self) -> dict[str, Any]:
        try:
            live = self._call("is_server_live")
            ready = self._call("is_server_ready")
            meta = self._call("get_server_metadata")
        except TritonUnavailable as exc:
            return {"url": self.url, "live": False, "ready": False, "error": str(exc)}
        return {"url": self.url, "live": live, "ready": ready, "version": meta.get("version"),
                "last_publish_error": self.last_error}  # fmt: skip

    def models(self) -> list[dict[str, Any]]:
        index = self._call("get_model_repository_index")
        return [
            {"name": m.get("name"), "version": m.get("version"), "state": m.get("state"),
             "reason": m.get("reason") or None}
            for m in index
        ]  # fmt: skip

    def ready(self, name: str, version: int | None = None) -> bool:
        return bool(self._call("is_model_ready", name, "" if version is None else str(version)))

    def model(self, name: str) -> dict[str, Any]:
        from tritonclient.utils import InferenceServerException

        try:
            cfg = self._call("get_model_config", name)
            meta = self._call("get_model_metadata", name)
        except InferenceServerException as exc:
            raise KeyError(exc.message() or str(exc)) from None
        return {"name": name, "ready": self.ready(name), "metadata": meta, "config": cfg,
                "statistics": self.statistics(name)}  # fmt: skip

    def statistics(self, name: str) -> list[dict[str, Any]]:
        stats = self._call("get_inference_statistics", name)
        out = []
        for s in stats.get("model_stats", []):
            inf = s.get("inference_stats", {})
            success = inf.get("success", {})
            n = int(success.get("count", 0))
            out.append({
                "version": s.get("version"),
                "inference_count": int(s.get("inference_count", 0)),
                "execution_count": int(s.get("execution_count", 0)),
                "success": n,
                "fail": int(inf.get("fail", {}).get("count", 0)),
                "mean_ms": round(int(success.get("ns", 0)) / n / 1e6, 3) if n else None,
                "mean_queue_ms": round(int(inf.get("queue", {}).get("ns", 0)) / n / 1e6, 3) if n else None,
            })  # fmt: skip
        return out

    def warmup(self, name: str, runs: int = 3) -> dict[str, Any]:
        """Send zero inputs of the model's declared shapes; returns the latencies."""
        import tritonclient.http as th

        meta = self._call("get_model_metadata", name)
        cfg = self._call("get_model_config", name)
        batched = int(cfg.get("max_batch_size", 0)) > 0
        inputs = []
        for i in meta["inputs"]:
            shape = [1 if int(d) < 0 else int(d) for d in i["shape"]]
            if batched and shape:
                shape[0] = 1
            dtype = th.triton_to_np_dtype(i["datatype"])
            t = th.InferInput(i["name"], shape, i["datatype"])
            t.set_data_from_numpy(np.zeros(shape, dtype=dtype))
            inputs.append(t)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self._call("infer", name, inputs)
            times.append(round((time.perf_counter() - t0) * 1000, 3))
        return {"model": name, "runs": runs, "latency_ms": times}
