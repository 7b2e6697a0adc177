"""Enrollment API: tokens (admin), gateway enrollment (token), devices and revocation.

Wire it with ``install_enrollment(app, service)`` (after ``install_security``) and
``app.include_router(router)``.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from control_plane.security import (
    Principal,
    Role,
    audit,
    audit_request,
    client_ip,
    get_security,
    require_role,
)
from control_plane.security.audit_trail import audits
from provisioning.device_registry import EnrollmentError
from provisioning.enrollment import EnrollmentService

router = APIRouter(prefix="/api/v1/enrollment", tags=["enrollment"])


def install_enrollment(app: FastAPI, service: EnrollmentService) -> None:
    app.state.enrollment = service


def get_enrollment(request: Request) -> EnrollmentService:
    """``install_enrollment``'s service, or the control plane's (``fleet_dir`` setting)."""
    service = getattr(request.app.state, "enrollment", None)
    if service is None:
        ctx = getattr(request.app.state, "ctx", None)
        service = ctx.services.get("enrollment") if ctx is not None else None
    if service is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "enrollment is not configured (set fleet_dir)"
        )
    return service  # type: ignore[no-any-return]


class TokenRequest(BaseModel):
    device_id: str
    hardware_class: str = "generic-linux"
    ttl_s: float = Field(default=86400, gt=0, le=30 * 86400)


class TokenAnswer(BaseModel):
    device_id: str
    token: str
    expires_in_s: float


class EnrollRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    device_id: str = Field(min_length=1, max_length=63)
    csr_pem: str = Field(min_length=1, max_length=16384)
    gateway_dir: str = Field(default="/etc/farmiq", max_length=512)
    state_dir: str = Field(default="/var/lib/farmiq", max_length=512)


class RevokeRequest(BaseModel):
    reason: str = Field(default="", max_length=256)


@router.post("/tokens", response_model=TokenAnswer)
def create_token(
    body: TokenRequest,
    request: Request,
    principal: Principal = Depends(require_role(Role.ADMIN)),
    service: EnrollmentService = Depends(get_enrollment),
) -> TokenAnswer:
    try:
        token = service.issue_token(
            body.device_id,
            hardware_class=body.hardware_class,
            ttl_s=body.ttl_s,
            created_by=principal.actor,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    audit_request(
        request,
        principal,
        "enrollment.token.create",
        body.device_id,
        {"hardware_class": body.hardware_class, "ttl_s": body.ttl_s},
    )
    return TokenAnswer(device_id=body.device_id, token=token, expires_in_s=body.ttl_s)


@router.post("/enroll")
def enroll(
    body: EnrollRequest, request: Request, service: EnrollmentService = Depends(get_enrollment)
) -> dict[str, object]:
    """Called by the gateway; the one-time token is its credential (no API key)."""
    security = get_security(request)
    ip = client_ip(request)
    wait = security.throttle.retry_after(ip)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed attempts",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    try:
        result = service.enroll(
            body.token,
            body.device_id,
            body.csr_pem,
            gateway_dir=body.gateway_dir,
            state_dir=body.state_dir,
        )
    except EnrollmentError as exc:
        security.throttle.record_failure(ip)
        audit(
            security.engine,
            f"device:{body.device_id}",
            "enrollment.refused",
            body.device_id,
            ip,
            {"reason": str(exc)},
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    audit(
        security.engine,
        f"device:{result.device_id}",
        "enrollment.enrolled",
        result.device_id,
        ip,
        {"hardware_class": result.hardware_class},
    )
    return result.to_dict()


@router.get("/devices")
def list_devices(
    _: Principal = Depends(require_role(Role.VIEWER)),
    service: EnrollmentService = Depends(get_enrollment),
) -> list[dict[str, object]]:
    return [
        {
            "device_id": d.device_id,
            "hardware_class": d.hardware_class,
            "enrolled_at": d.enrolled_at.isoformat(),
            "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None,
            "active": d.active,
        }
        for d in service.registry.devices()
    ]


def _device_state(device_id: str, args: dict[str, object]) -> dict[str, object] | None:
    """A device's enrollment: active or revoked (when and why)."""
    service: EnrollmentService = args["service"]  # type: ignore[assignment]
    d = service.registry.get(device_id)
    if d is None:
        return None
    return {
        "active": d.active,
        "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None,
        "reason": d.revoked_reason,
    }


@router.post("/devices/{device_id}/revoke")
@audits("device.revoke", "{device_id}", snapshot=_device_state)
def revoke_device(
    device_id: str,
    body: RevokeRequest,
    request: Request,
    principal: Principal = Depends(require_role(Role.ADMIN)),
    service: EnrollmentService = Depends(get_enrollment),
) -> dict[str, object]:
    try:
        service.revoke(device_id, body.reason)
    except KeyError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no enrolled device {device_id!r}"
        ) from None
    return {"device_id": device_id, "revoked": True}


@router.get("/crl.pem")
def crl(service: EnrollmentService = Depends(get_enrollment)) -> Response:
    """The current CRL (public: it is signed by the CA and lists only serial numbers)."""
    return Response(service.paths.crl.read_bytes(), media_type="application/pkix-crl")
