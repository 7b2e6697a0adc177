"""Publish promoted models to the cloud Triton, so gateways can always escalate to the
version they run.

On promotion: fetch the ONNX file from the registry and load it through Triton's repository
API (explicit model control: ``POST /v2/repository/models/{name}/load``) with the model
configuration and the model files *in the load request*, so the control plane and Triton
share no volume. The request carries the last ``keep_versions`` versions (Triton replaces
the whole model directory on each load), so gateways mid-rollout can still escalate to
the version they run; versions another replica published are fetched from the registry.
``repository``, when given, also gets a copy on disk (an export, never what Triton reads).
Also answers the cloud inference view: which models Triton has, their readiness,
statistics, and a warm-up call.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from control_plane.triton.export import (
    Variant,
    config_json,
    config_pbtxt,
    load_request_files,
    write_model_entry,
)
from farmiq.bundle.builder import onnx_io_specs
from farmiq.bundle.format import Serving

log = logging.getLogger(__name__)


class TritonUnavailable(RuntimeError):
    pass


class TritonPublisher:
    def __init__(
        self,
        url: str,
        repository: Path | None = None,
        *,
        variant: Variant = "python",
        kind: Literal["KIND_GPU", "KIND_CPU"] | None = None,
        registry: Any = None,
        timeout_s: float = 60.0,
        keep_versions: int = 3,
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
        self.keep_versions = keep_versions
        self.published: dict[str, int] = {}
        self._versions: dict[str, dict[int, bytes]] = {}  # name -> version -> ONNX bytes
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
        serving = serving or Serving()
        with self._lock:
            versions = self._kept_versions(name, version, model_bytes)
            pbtxt = config_pbtxt(
                name, inputs, outputs, serving, variant=self.variant, kind=self.kind,
                keep_versions=self.keep_versions,
            )  # fmt: skip
            t0 = time.perf_counter()
            self._call(
                "load_model",
                name,
                config=config_json(pbtxt),
                files=load_request_files(versions, variant=self.variant),
            )
            self._versions[name] = versions
            self.published[name] = version
            if self.repository is not None:
                write_model_entry(
                    self.repository, name, version, model_bytes, inputs, outputs, serving,
                    variant=self.variant, kind=self.kind,
                )  # fmt: skip
        ms = (time.perf_counter() - t0) * 1000
        log.info("published %s v%s to Triton %s (load %.0f ms)", name, version, self.url, ms)
        return {
            "model": name,
            "version": version,
            "load_ms": round(ms, 1),
            "ready": self.ready(name, version),
        }

    def _kept_versions(self, name: str, version: int, model_bytes: bytes) -> dict[int, bytes]:
        """The newest ``keep_versions`` versions to send: ours, plus those Triton serves
        (published by another replica or before a restart), read from the registry."""
        kept = dict(self._versions.get(name, {}))
        if self.registry is not None:
            from tritonclient.utils import InferenceServerException

            # Models loaded from a request are not in the repository index; their
            # metadata lists the versions being served.
            try:
                served = self._call("get_model_metadata", name).get("versions") or []
            except InferenceServerException:
                served = []  # not loaded yet
            for raw in served:
                v = int(raw)
                if v not in kept and v != version:
                    try:
                        kept[v] = self.registry.model_bytes(name, v)
                    except Exception as exc:  # a version gone from the registry stays out
                        log.info("not keeping %s v%s on Triton: %s", name, v, exc)
        kept[int(version)] = model_bytes
        newest = sorted(kept)[-self.keep_versions :]
        return {v: kept[v] for v in newest}

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
