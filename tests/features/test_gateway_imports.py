"""The gateway side of features stays light: no feast, pandas or pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("feast", "pandas", "pyarrow", "mlflow", "evidently", "sklearn", "dask")


def test_feature_cache_and_definitions_do_not_pull_cloud_packages(tmp_path: Path) -> None:
    code = (
        "import sys, json\n"
        "import farmiq.features, edge_agent.features.feature_cache as fc\n"
        f"c = fc.FeatureCache({str(tmp_path / 'f.db')!r})\n"
        "c.ingest([('b1', 'temperature', 1.7e9, 20.0)])\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_control_plane_module_imports_feast_lazily() -> None:
    code = (
        "import sys, json\n"
        "import control_plane.feature_store\n"
        "print(json.dumps(sorted(m for m in ('feast', 'pandas') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
