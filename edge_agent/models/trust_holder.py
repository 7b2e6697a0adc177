"""The one holder of the gateway's trust root (docs/security.md).

The installer verifies against ``holder.current``; a root rotation (``down/trust``) and a
SIGHUP reload replace it here, and nowhere else, under the install lock
(``InstallService``), so no bundle is ever verified against a half-applied root. Pure
checks stay in ``farmiq.bundle.trust.TrustRoot``; this object owns the trusted state and
its file.
"""

from __future__ import annotations

from pathlib import Path

from farmiq.bundle.trust import TrustRoot


class TrustHolder:
    def __init__(self, root: TrustRoot, path: Path) -> None:
        self.current = root
        self.path = path

    @classmethod
    def load(cls, path: Path) -> TrustHolder:
        return cls(TrustRoot.load(path), path)

    def rotate(self, payload: bytes) -> TrustRoot | None:
        """Blocking: accept new root metadata signed by the current root's threshold,
        write it atomically, then use it. None when it is the root already held."""
        rotated = self.current.update(payload)
        if rotated is None:
            return None
        rotated.save(self.path)  # persisted before it is used: a reboot keeps it
        self.current = rotated
        return rotated

    def reload(self, path: Path) -> TrustRoot:
        """Blocking: re-read the root file (SIGHUP; rotating keys rewrites it)."""
        root = TrustRoot.load(path)
        self.current = root
        self.path = path
        return root
