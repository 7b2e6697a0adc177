"""What the gateway has left: CPU, memory, queue depths, GPU (if any), link state.

psutil's ``cpu_percent(interval=None)`` compares with the previous call, so the first
answer after start-up is 0.0 and later ones cover the time since the last ask; nothing
here blocks or samples in the background.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_agent.inference.router import Router
    from edge_agent.uplink.port import LinkState

_proc = psutil.Process()


def gpu_info() -> dict[str, Any]:
    """The execution providers ONNX Runtime offers here, and the NVIDIA devices the driver lists.

    ONNX Runtime is asked only when the gateway has loaded it for an ONNX model: a gateway
    that serves only LiteRT models never loads it (about 20 MB resident for good), so it
    reports ``onnxruntime_providers`` as null and the devices the driver lists.
    """
    ort = sys.modules.get("onnxruntime")
    providers: list[str] | None = ort.get_available_providers() if ort is not None else None
    devices = []
    root = Path("/proc/driver/nvidia/gpus")
    if root.is_dir():
        for d in sorted(root.iterdir()):
            info = d / "information"
            model = ""
            if info.exists():
                for line in info.read_text(errors="replace").splitlines():
                    if line.startswith("Model:"):
                        model = line.split(":", 1)[1].strip()
            devices.append({"bus": d.name, "model": model})
    return {
        "available": bool(devices)
        if providers is None
        else "CUDAExecutionProvider" in providers or "TensorrtExecutionProvider" in providers,
        "onnxruntime_providers": providers,
        "devices": devices,
    }


def resource_status(
    state_dir: Path,
    router: Router,
    link: LinkState,
    mcu_describe: Callable[[], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """``mcu_describe``: ``MCUManager.describe`` (docs/mcu-protocol.md section 5)."""
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage(str(state_dir))
    mcus: list[Any] = []
    if mcu_describe is not None:
        try:
            mcus = mcu_describe()
        except Exception as exc:  # an MCU manager mid-reconnect must not fail the status
            mcus = [{"error": str(exc)}]
    return {
        "ts": time.time(),
        "cpu": {
            "count": os.cpu_count(),
            "percent": psutil.cpu_percent(interval=None),
            "load_avg": list(os.getloadavg()),
            "process_percent": _proc.cpu_percent(interval=None),
        },
        "memory": {
            "total_mb": round(vm.total / 2**20, 1),
            "available_mb": round(vm.available / 2**20, 1),
            "percent": vm.percent,
            "process_rss_mb": round(_proc.memory_info().rss / 2**20, 1),
        },
        "disk": {"state_dir_free_mb": round(disk.free / 2**20, 1), "percent": disk.percent},
        "queues": router.queue_depths(),
        "gpu": gpu_info(),
        "links": {
            "broker_connected": link.connected.is_set(),
            "cloud": {n: b.snapshot() for n, b in router.breakers.items() if n != "mcu"},
            "mcu": {"configured": mcu_describe is not None, "devices": mcus},
        },
        "escalation_store": router.escalations.stats() if router.escalations else None,
    }
