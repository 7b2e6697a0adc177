"""HMAC-SHA256 signed webhooks.

The signature covers ``<timestamp>.<body>`` so a captured delivery cannot be replayed later
(receivers reject timestamps outside ``tolerance_s``) and the body cannot be altered.
Header names follow the common ``t=...,v1=...`` convention in two headers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-FarmIQ-Timestamp"
SIGNATURE_HEADER = "X-FarmIQ-Signature"
SCHEME = "v1="


class WebhookSignatureError(ValueError):
    pass


def _mac(secret: str | bytes, timestamp: str, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_webhook(
    secret: str | bytes, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Headers to send with ``body``."""
    if not secret:
        raise ValueError("webhook secret must not be empty")
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: SCHEME + _mac(secret, ts, body)}


def verify_webhook(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Raise ``WebhookSignatureError`` unless ``headers`` carry a fresh, valid signature."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ts = lowered.get(TIMESTAMP_HEADER.lower())
    sig = lowered.get(SIGNATURE_HEADER.lower())
    if not ts or not sig:
        raise WebhookSignatureError("missing webhook signature headers")
    try:
        ts_int = int(ts)
    except ValueError:
        raise WebhookSignatureError("malformed webhook timestamp") from None
    current = time.time() if now is None else now
    if abs(current - ts_int) > tolerance_s:
        raise WebhookSignatureError("webhook timestamp outside tolerance (replay?)")
    expected = SCHEME + _mac(secret, ts, body)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise WebhookSignatureError("webhook signature does not match")
