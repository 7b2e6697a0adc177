"""Start-up hook of the features area: one FeastFeatureStore per control-plane process.

Cheap: Feast itself is imported on the first request that needs it, not at start-up.
The online store comes from ``FARMIQ_CP_FEATURE_ONLINE_STORE`` (a sqlite://,
postgresql:// or redis:// URL; default SQLite in the repository), see docs/features.md.
"""

from __future__ import annotations

import os
from typing import Any

from control_plane.feature_store import FeastFeatureStore

SERVICE = "features"
ONLINE_STORE_ENV = "FARMIQ_CP_FEATURE_ONLINE_STORE"


def setup(ctx: Any) -> None:
    url = getattr(ctx.settings, "feature_online_store", None) or os.environ.get(ONLINE_STORE_ENV)
    ctx.services[SERVICE] = FeastFeatureStore(ctx.data_dir / "feature_repo", online_store_url=url)
