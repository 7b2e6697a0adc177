"""Operator API security: hashed API keys with roles, failed-auth throttling, signed
webhooks and an append-only audit log."""

from control_plane.security.api_keys import ApiKeyStore
from control_plane.security.audit_log import AuditEntry, audit, create_audit_table, query_audit
from control_plane.security.dependencies import (
    SecurityService,
    audit_request,
    authenticate,
    client_ip,
    get_security,
    install_security,
    require_role,
)
from control_plane.security.roles import Principal, Role
from control_plane.security.throttle import FailedAuthThrottle
from control_plane.security.webhooks import WebhookSignatureError, sign_webhook, verify_webhook

__all__ = [
    "ApiKeyStore",
    "AuditEntry",
    "FailedAuthThrottle",
    "Principal",
    "Role",
    "SecurityService",
    "WebhookSignatureError",
    "audit",
    "audit_request",
    "authenticate",
    "client_ip",
    "create_audit_table",
    "get_security",
    "install_security",
    "query_audit",
    "require_role",
    "sign_webhook",
    "verify_webhook",
]
