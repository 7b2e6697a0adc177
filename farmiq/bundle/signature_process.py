"""Signature checks in a short-lived child process: what a gateway daemon does.

Why a child: the checks need ``cryptography`` (its own OpenSSL) and, for the fleet's TUF
root, python-tuf. Imported into the daemon, they stay resident for as long as it runs,
about 9 MB with the simple trust root and 13 MB with a TUF root (bench/footprint.py), for
checks that run a few times a day: at start, on an install, on a root rotation, on a
director document. apt runs its signature checks the same way, in gpgv as a child process.
The child gets only the bytes to check, answers with a small JSON document, and exits, so
its memory goes back to the system. Each check costs one interpreter start (about 0.1 s
here, more on a Raspberry Pi).

Only the process that calls ``isolate()`` (``farmiq agent run``) sends its checks to a
child. Everywhere else (the control plane, the CLI, tests that build an agent in-process)
the same checks run in-process, with the same code: the child runs the in-process checks.

Nothing fails open. A child that cannot start, crashes, times out or answers nonsense
raises ``SignatureProcessError`` (a ``ValueError``), and the bundle, root or document it
was checking is refused.

The child's protocol (stdin: one JSON request, stdout: one JSON answer):

* ``{"op": "signatures", "checks": [[public_hex, signature_hex, data_b64], ...]}`` ->
  ``{"valid": [bool, ...]}``;
* ``{"op": "trust-parse", "root": b64}`` -> ``{"trust": <TrustRoot JSON>}``;
* ``{"op": "trust-update", "current": b64, "new": b64, "now": iso | null}`` ->
  ``{"trust": <TrustRoot JSON> | null}``;
* any refusal -> ``{"error": "...", "kind": "trust"}``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

TIMEOUT_S = 60.0
_isolated = False


class SignatureProcessError(ValueError):
    """The child could not give an answer; whatever it was checking is refused."""


def isolate() -> None:
    """From now on this process checks signatures in a child process."""
    global _isolated
    _isolated = True


def isolated() -> bool:
    return _isolated


def b64(data: bytes) -> str:
    """Bytes as the protocol carries them."""
    return base64.b64encode(data).decode()


def call(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request in a child process and return its answer."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "farmiq.bundle.signature_process"],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=TIMEOUT_S,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SignatureProcessError(f"signature check process failed: {exc}") from None
    try:
        answer = json.loads(proc.stdout)
        if not isinstance(answer, dict):
            raise ValueError("not an object")
    except ValueError:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SignatureProcessError(
            f"signature check process failed (exit {proc.returncode}): {tail[0]}"
        ) from None
    return answer


def valid_signatures(checks: list[tuple[str, str, bytes]]) -> list[bool]:
    """For each (public key hex, signature hex, data): does the signature verify?"""
    if not checks:
        return []
    answer = call(
        {"op": "signatures", "checks": [[pub, sig, b64(data)] for pub, sig, data in checks]}
    )
    valid = answer.get("valid")
    if (
        not isinstance(valid, list)
        or len(valid) != len(checks)
        or not all(v is True or v is False for v in valid)
    ):
        raise SignatureProcessError(f"signature check process answered {answer!r:.200}")
    return valid


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """The child's side: the in-process checks, on the request's bytes."""
    op = request.get("op")
    if op == "signatures":
        from farmiq.bundle.signing import verify_signature

        return {
            "valid": [
                verify_signature(pub, sig, base64.b64decode(data))
                for pub, sig, data in request["checks"]
            ]
        }
    from datetime import datetime

    from farmiq.bundle.trust import TrustError, TrustRoot

    try:
        if op == "trust-parse":
            root = TrustRoot.parse(base64.b64decode(request["root"]))
        elif op == "trust-update":
            now = datetime.fromisoformat(request["now"]) if request.get("now") else None
            current = TrustRoot.parse(base64.b64decode(request["current"]))
            updated = current.update(base64.b64decode(request["new"]), now=now)
            if updated is None:
                return {"trust": None}
            root = updated
        else:
            return {"error": f"unknown request {op!r}"}
    except TrustError as exc:
        return {"error": str(exc), "kind": "trust"}
    return {"trust": root.model_dump(mode="json")}


def main() -> int:
    try:
        request = json.loads(sys.stdin.buffer.read())
        answer = _serve(request)
    except Exception as exc:  # the parent reads this as a refusal, never as a pass
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
