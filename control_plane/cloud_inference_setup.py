"""Start-up wiring for cloud inference: when ``triton_url`` is set, every promotion is
published to the cloud Triton (``control_plane.triton.publisher``)."""

from __future__ import annotations

import logging
import os

from control_plane.context import ControlPlaneContext

log = logging.getLogger(__name__)


def setup(ctx: ControlPlaneContext) -> None:
    s = ctx.settings
    if not s.triton_url:
        log.info("no triton_url: promotions are not published to a cloud Triton")
        return
    from control_plane.triton.publisher import TritonPublisher

    # Models travel in the load request; triton_repository only keeps an exported copy.
    repo = s.triton_repository
    # Production Triton (NVIDIA's GPU container) serves the ONNX Runtime platform; the
    # CPU-only tritonserver of the nvidia-pytriton wheel has only the python backend.
    variant = s.triton_variant or os.environ.get("FARMIQ_TRITON_VARIANT", "onnxruntime_onnx")
    kind = "KIND_CPU" if variant == "python" else None
    publisher = TritonPublisher(
        s.triton_url,
        repo,
        variant=variant,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        registry=ctx.registry,
    )
    ctx.services["cloud_inference"] = publisher
    ctx.promotion_hooks.append(publisher.on_promoted)
