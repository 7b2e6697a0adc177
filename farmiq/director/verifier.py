"""The gateway's check of director envelopes: one pure object that owns the trusted state.

In the style of python-tuf's ngclient ``TrustedMetadataSet``: ``DirectorVerifier`` holds the
director role's keys and threshold (from the fleet's trust root) and, per leaf, the last
counter it accepted (and the digest of that document). ``open`` either returns the body
to act on or raises ``DirectorRefused`` with a code; it never reads or writes files. The
caller persists ``state()`` after an accepted document (``farmiq.director.state_file``)
and hands it back at start-up, so a reboot does not reopen the replay window.

Codes (also in docs/security.md):

* ``unsigned``: not a director envelope, or no signature at all;
* ``no-director-role``: this gateway's trust root names no director keys (refuse all);
* ``signature``: fewer valid signatures by director keys than the threshold;
* ``not-for-device`` / ``wrong-leaf``: addressed to another gateway or another topic;
* ``expired``: past its ``expires`` (offline grace: serving goes on, nothing new starts);
* ``replayed``: the counter of a document already accepted, with other contents;
* ``out-of-order``: a counter below the last one accepted on that leaf.

The same document again (same counter, same digest: a retained message re-delivered after
a reconnect) is returned with ``duplicate=True``; the caller decides whether to act again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from farmiq.bundle.format import canonical_json
from farmiq.bundle.signature_process import SignatureProcessError
from farmiq.bundle.signing import valid_signers
from farmiq.director.envelope import FORMAT, MAX_ENVELOPE_BYTES, ROLE


class DirectorRefused(Exception):
    def __init__(self, code: str, reason: str, counter: int | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.counter = counter


@dataclass(frozen=True)
class Opened:
    leaf: str
    counter: int
    body: bytes
    expires: float
    duplicate: bool = False


class DirectorVerifier:
    def __init__(
        self,
        device_id: str,
        keys: dict[str, str],
        threshold: int,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.device_id = device_id
        self.keys = dict(keys)  # keyid -> raw Ed25519 public key (hex)
        self.threshold = max(1, int(threshold))
        st = state or {}
        self._counters: dict[str, int] = {
            str(k): int(v) for k, v in dict(st.get("counters", {})).items()
        }
        self._digests: dict[str, str] = {
            str(k): str(v) for k, v in dict(st.get("digests", {})).items()
        }

    @classmethod
    def from_trust(
        cls, device_id: str, trust: Any, state: dict[str, Any] | None = None
    ) -> DirectorVerifier:
        """``trust`` is a ``farmiq.bundle.trust.TrustRoot`` (its ``director`` role)."""
        keys, threshold = trust.role_keys(ROLE) if ROLE in trust.roles else ({}, 1)
        return cls(device_id, keys, threshold, state)

    def update_trust(self, trust: Any) -> None:
        """A root rotation changed the director keys; the counters stay."""
        keys, threshold = trust.role_keys(ROLE) if ROLE in trust.roles else ({}, 1)
        self.keys, self.threshold = dict(keys), max(1, int(threshold))

    def state(self) -> dict[str, Any]:
        return {"counters": dict(self._counters), "digests": dict(self._digests)}

    def last_counter(self, leaf: str) -> int:
        return self._counters.get(leaf, 0)

    def open(self, leaf: str, data: bytes, now: float | None = None) -> Opened:
        """Verify an envelope received on ``down/<leaf>``; accept it (counter advances)."""
        signed, sigs = self._parse(data)
        counter = signed["counter"]
        if not self.keys:
            raise DirectorRefused(
                "no-director-role", "the trust root names no director keys", counter
            )
        payload = canonical_json(signed)
        try:
            good = valid_signers(self.keys, sigs, payload)
        except SignatureProcessError as exc:  # the check process failed: refused
            raise DirectorRefused("signature", str(exc), counter) from None
        if len(good) < self.threshold:
            raise DirectorRefused(
                "signature",
                f"{len(good)} valid director signature(s), threshold is {self.threshold}",
                counter,
            )
        if signed["device"] != self.device_id:
            raise DirectorRefused("not-for-device", f"addressed to {signed['device']!r}", counter)
        if signed["leaf"] != leaf:
            raise DirectorRefused(
                "wrong-leaf", f"signed for down/{signed['leaf']}, received on down/{leaf}", counter
            )
        t = time.time() if now is None else now
        if signed["expires"] < t:
            raise DirectorRefused("expired", f"expired {t - signed['expires']:.0f} s ago", counter)
        try:
            body = base64.b64decode(signed["body"], validate=True)
        except (binascii.Error, ValueError):
            raise DirectorRefused("unsigned", "body is not base64", counter) from None
        digest = hashlib.sha256(payload).hexdigest()
        last = self._counters.get(leaf, 0)
        if counter < last:
            raise DirectorRefused(
                "out-of-order", f"counter {counter} is below the last accepted {last}", counter
            )
        if counter == last:
            if self._digests.get(leaf) == digest:
                return Opened(leaf, counter, body, signed["expires"], duplicate=True)
            raise DirectorRefused("replayed", f"counter {counter} was already used", counter)
        self._counters[leaf] = counter
        self._digests[leaf] = digest
        return Opened(leaf, counter, body, signed["expires"])

    @staticmethod
    def _parse(data: bytes) -> tuple[dict[str, Any], list[Any]]:
        if len(data) > MAX_ENVELOPE_BYTES:
            raise DirectorRefused("unsigned", f"over {MAX_ENVELOPE_BYTES} bytes")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise DirectorRefused("unsigned", "not a signed director document") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
            raise DirectorRefused("unsigned", "not a signed director document")
        signed, sigs = doc["signed"], doc.get("signatures")
        if signed.get("_type") != FORMAT:
            raise DirectorRefused("unsigned", f"_type is not {FORMAT}")
        if not isinstance(sigs, list) or not sigs:
            raise DirectorRefused("unsigned", "document carries no signature")
        ok = (
            isinstance(signed.get("leaf"), str)
            and isinstance(signed.get("device"), str)
            and type(signed.get("counter")) is int
            and signed["counter"] >= 0
            and isinstance(signed.get("expires"), float | int)
            and isinstance(signed.get("issued"), float | int)
            and isinstance(signed.get("body"), str)
            and set(signed) == {"_type", "leaf", "device", "counter", "issued", "expires", "body"}
        )
        if not ok:
            raise DirectorRefused("unsigned", "signed part is malformed")
        return signed, sigs
