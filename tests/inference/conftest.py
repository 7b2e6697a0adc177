"""Fixtures for the inference area: in-process models, a real tritonserver (module-scoped:
start-up plus one python-backend model load costs a few seconds), a signing key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.models.model_from_bytes import loaded_model_from_onnx
from edge_agent.models.serving import LoadedModel

LABELS = ["off", "low", "high"]


def make_model(
    onnx_bytes: bytes, name: str = "barn", version: int = 1, **serving: Any
) -> LoadedModel:
    return loaded_model_from_onnx(
        onnx_bytes, name=name, version=version, labels=LABELS, serving=serving
    )


@pytest.fixture(scope="session")
def big_model() -> Any:
    """An MLP big enough that the router micro-batches it."""
    from farmiq_sim.barn_model import train_barn_model

    return train_barn_model(n=1500, seed=2, hidden=256)


class TritonFixture:
    def __init__(self, server: Any, publisher: Any, repo: Path) -> None:
        self.server = server
        self.publisher = publisher
        self.repo = repo


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory, barn_model: Any) -> Iterator[TritonFixture]:
    from control_plane.triton.publisher import TritonPublisher
    from farmiq_sim.triton_server import TritonServer

    work = tmp_path_factory.mktemp("triton")
    repo = work / "repo"
    server = TritonServer(repo, work / "run", explicit=True)
    server.start(timeout=60)
    pub = TritonPublisher(server.http_url, repo, variant="python", kind="KIND_CPU")
    pub.publish_bytes("barn", 1, barn_model.onnx_bytes)
    yield TritonFixture(server, pub, repo)
    server.stop()
