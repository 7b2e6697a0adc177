"""Which role each operator-API request needs, decided in one place for every router.

The rule is by path and method, so an area's router is covered the moment it is included,
without any code of its own:

* outside ``/api/v1`` (``/health``, ``/ready``, ``/metrics``, ``/docs``, ``/openapi.json``,
  dashboard assets): open. Liveness/readiness probes and Prometheus scrapes carry no key;
  the dashboard's data comes from ``/api/v1`` and needs one.
* a few ``/api/v1`` endpoints are public by nature: the gateway's enrollment call (its
  one-time token is the credential and is throttled on its own), the CRL, and the bundle
  trust root (public keys only).
* administration (API keys, audit log, enrollment changes, farm erasure) needs ``admin``;
* any other read (GET/HEAD/OPTIONS) needs ``viewer``; any other change needs ``operator``.
"""

from __future__ import annotations

from control_plane.security.roles import Role

API_PREFIX = "/api/v1"

PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("POST", "/api/v1/enrollment/enroll"),
        ("GET", "/api/v1/enrollment/crl.pem"),
        ("GET", "/api/v1/trust-root"),
    }
)

# Every method under these prefixes is administration.
ADMIN_PREFIXES: tuple[str, ...] = ("/api/v1/security", "/api/v1/audit")
# Changes under these prefixes are administration; reads stay at viewer. Farms: erasure
# (DELETE /api/v1/farms/{farm}) destroys a farm's data; its export is a read.
ADMIN_CHANGE_PREFIXES: tuple[str, ...] = ("/api/v1/enrollment", "/api/v1/farms")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def required_role(method: str, path: str) -> Role | None:
    """The least role that may make this request; ``None`` when it needs no key."""
    method = method.upper()
    path = path.rstrip("/") or "/"
    if not _under(path, API_PREFIX):
        return None
    if (method, path) in PUBLIC or (method == "HEAD" and ("GET", path) in PUBLIC):
        return None
    if any(_under(path, p) for p in ADMIN_PREFIXES):
        return Role.ADMIN
    if method not in READ_METHODS and any(_under(path, p) for p in ADMIN_CHANGE_PREFIXES):
        return Role.ADMIN
    return Role.VIEWER if method in READ_METHODS else Role.OPERATOR


def is_change(method: str) -> bool:
    return method.upper() not in READ_METHODS
