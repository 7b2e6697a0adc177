"""Director envelope: the one wire format for signed control-plane documents.

Canonical JSON (sorted keys, no whitespace) of::

    {"signed": {"_type": "farmiq-director/1",
                "leaf": "desired",            # the down/ leaf it may be delivered on
                "device": "gw-17",            # the one gateway it is for
                "counter": 1764150000123000,  # grows per device, never repeats
                "issued": 1764150000.12,      # Unix seconds
                "expires": 1766742000.12,     # Unix seconds: refused after this
                "body": "<base64 of the document bytes>"},
     "signatures": [{"keyid": "<sha256 of the raw Ed25519 key>", "sig": "<hex>"}]}

The signatures cover ``canonical_json(signed)``. The body is carried as base64, not as
nested JSON, so the signed bytes never depend on how anyone re-serialises the document
(actuator commands, feature rows and desired states all pass through unchanged).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, Protocol

from farmiq import topics
from farmiq.bundle.format import canonical_json

FORMAT = "farmiq-director/1"
ROLE = "director"
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024

# Leaves whose documents change what a gateway runs or does: only signed ones are acted on.
SIGNED_LEAVES = frozenset({topics.DESIRED, topics.ACTUATOR, topics.FEATURES, topics.OUTBOX_ACK})

# How long each kind of document stays valid (seconds). A desired state is retained and
# read by gateways that were offline for a while, so it lives long (the control plane
# re-signs it when a gateway comes back: ``control_plane.director``); a command is for now.
DEFAULT_TTL_S: dict[str, float] = {
    topics.DESIRED: 30 * 86400.0,
    topics.ACTUATOR: 300.0,
    topics.FEATURES: 7 * 86400.0,
    topics.OUTBOX_ACK: 86400.0,
}


class SignsBytes(Protocol):
    """The bundle ``Signer`` interface (``farmiq.bundle.signing``), or a Vault transit one."""

    def sign(self, data: bytes) -> dict[str, str]: ...


def signed_part(
    *, leaf: str, device: str, counter: int, body: bytes, issued: float, expires: float
) -> dict[str, Any]:
    return {
        "_type": FORMAT,
        "leaf": leaf,
        "device": device,
        "counter": int(counter),
        "issued": float(issued),
        "expires": float(expires),
        "body": base64.b64encode(body).decode("ascii"),
    }


def seal(
    signers: Sequence[SignsBytes],
    *,
    leaf: str,
    device: str,
    counter: int,
    body: bytes,
    ttl_s: float | None = None,
    now: float | None = None,
) -> bytes:
    """Wrap ``body`` for ``device`` on ``leaf``: the bytes to publish on ``down/<leaf>``."""
    if not signers:
        raise ValueError("no director signing key")
    issued = time.time() if now is None else now
    ttl = DEFAULT_TTL_S.get(leaf, 3600.0) if ttl_s is None else ttl_s
    signed = signed_part(
        leaf=leaf, device=device, counter=counter, body=body, issued=issued, expires=issued + ttl
    )
    payload = canonical_json(signed)
    return canonical_json({"signed": signed, "signatures": [s.sign(payload) for s in signers]})
