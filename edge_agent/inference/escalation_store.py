"""Low-confidence inputs kept on disk while the cloud cannot be asked.

When the confidence cascade wants a second opinion and the link is down, the local answer
goes back flagged and the input is written here, so it can be re-checked against the cloud
model later or sent for labelling. The store is bounded by entry count and bytes: the
oldest entries go first (a gateway's disk is small and a long outage must not fill it).
One JSON file per entry, written to a temporary name and renamed, so a crash never leaves
half an entry.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson


class EscalationStore:
    def __init__(
        self, directory: Path, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.dir = directory
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self.dropped = 0
        # (file name, size) oldest first; names sort by time
        self._index: list[tuple[str, int]] = sorted(
            (p.name, p.stat().st_size) for p in self.dir.glob("*.json")
        )
        self._bytes = sum(s for _, s in self._index)

    def add(
        self,
        model: str,
        version: int,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        confidence: list[float],
        reason: str,
    ) -> Path:
        entry = {
            "model": model,
            "version": version,
            "ts": time.time(),
            "reason": reason,
            "confidence": confidence,
            "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
            "outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()},
        }
        data = orjson.dumps(entry)
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}.json"
        tmp = self.dir / ("." + name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)
        self._index.append((name, len(data)))
        self._bytes += len(data)
        self._trim()
        return self.dir / name

    def _trim(self) -> None:
        while self._index and (len(self._index) > self.max_entries or self._bytes > self.max_bytes):
            name, size = self._index.pop(0)
            try:
                (self.dir / name).unlink()
            except FileNotFoundError:
                pass
            self._bytes -= size
            self.dropped += 1

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        names = [n for n, _ in self._index][: limit if limit is not None else None]
        out = []
        for n in names:
            try:
                out.append({"id": n, **orjson.loads((self.dir / n).read_bytes())})
            except (OSError, orjson.JSONDecodeError):
                continue
        return out

    def remove(self, entry_id: str) -> bool:
        for i, (n, size) in enumerate(self._index):
            if n == entry_id:
                del self._index[i]
                self._bytes -= size
                (self.dir / n).unlink(missing_ok=True)
                return True
        return False

    def __len__(self) -> int:
        return len(self._index)

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._index),
            "bytes": self._bytes,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
            "dropped": self.dropped,
            "dir": str(self.dir),
        }
