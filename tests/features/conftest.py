"""Fixtures for the features area: a gateway cache and a Feast repository in tmp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("FEAST_USAGE", "False")


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "features.db"


@pytest.fixture
def cache(cache_path: Path) -> Iterator[object]:
    from edge_agent.features.feature_cache import FeatureCache

    c = FeatureCache(cache_path)
    yield c
    c.close()


@pytest.fixture
def feast_store(tmp_path: Path) -> object:
    from control_plane.feature_store import FeastFeatureStore

    store = FeastFeatureStore(tmp_path / "feast-repo")
    store.apply()
    return store
