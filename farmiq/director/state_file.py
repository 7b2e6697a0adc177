"""Persist a ``DirectorVerifier``'s counters (atomic replace + fsync: a torn or lost file
after a power cut would reopen the replay window)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


def load_state(path: Path) -> dict[str, Any]:
    try:
        obj = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        log.error("director counters in %s unreadable (%s); starting from zero", path, exc)
        return {}
    return obj if isinstance(obj, dict) else {}


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(orjson.dumps(state))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
