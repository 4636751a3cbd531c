"""Two-factor login (TOTP, django-otp): who must use it, enrolment, the code check at login, and the reset.

A user who enrolled an authenticator app types its code after the password; a user in one of the groups
of HUB_REQUIRE_2FA_GROUPS who has not enrolled is sent to enrolment before the login completes. Until
then the session holds only a short-lived "pending" mark, never a logged-in user, so neither the admin
nor the API (session authentication) can be reached with the password alone.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrationhub.audit import AuditAction, audit_record
from integrationhub.authentication import client_ip, login_failure_register, login_locked
from integrationhub.errors import HubValidationError

PENDING_SESSION_KEY = "hub_two_factor_pending"
PENDING_SECONDS = 300
DEVICE_NAME = "authenticator app"


class TwoFactorStep:
    """What stands between a correct password and a session."""

    NONE = "none"
    VERIFY = "verify"
    ENROL = "enrol"


def required_groups() -> list[str]:
    return [name for name in getattr(settings, "HUB_REQUIRE_2FA_GROUPS", []) if name]


# --- selectors ------------------------------------------------------------------------------------------------


def two_factor_device(*, user: Any) -> TOTPDevice | None:
    """The user's confirmed authenticator, or None when they have not enrolled."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("-id").first()


def two_factor_required(*, user: Any) -> bool:
    """Whether HUB_REQUIRE_2FA_GROUPS makes two-factor login mandatory for this user."""
    groups = required_groups()
    return bool(groups) and user.groups.filter(name__in=groups).exists()


def two_factor_login_step(*, user: Any) -> str:
    """After a correct password: log in now, ask for the code, or enrol first."""
    if two_factor_device(user=user) is not None:
        return TwoFactorStep.VERIFY
    if two_factor_required(user=user):
        return TwoFactorStep.ENROL
    return TwoFactorStep.NONE


def device_secret(device: TOTPDevice) -> str:
    """The base32 secret to type into an authenticator app that cannot scan the QR code."""
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def device_qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URL as an inline SVG QR code (drawn here, nothing fetched from elsewhere)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    svg = image.to_string(encoding="unicode")
    return svg[svg.index("<svg") :] if "<svg" in svg else svg


# --- the pending login in the session ---------------------------------------------------------------------


@dataclass(frozen=True)
class PendingLogin:
    user_id: int
    backend: str
    next_url: str
    step: str


def pending_login_start(*, request: Any, user: Any, next_url: str, step: str) -> None:
    """Remember, for a few minutes, that `user` gave the right password and still owes the second factor."""
    request.session[PENDING_SESSION_KEY] = {
        "user_id": user.pk,
        "backend": getattr(user, "backend", "django.contrib.auth.backends.ModelBackend"),
        "next": next_url,
        "step": step,
        "at": time.time(),
    }


def pending_login(*, request: Any) -> PendingLogin | None:
    data = request.session.get(PENDING_SESSION_KEY)
    if not isinstance(data, dict) or time.time() - float(data.get("at", 0)) > PENDING_SECONDS:
        request.session.pop(PENDING_SESSION_KEY, None)
        return None
    return PendingLogin(
        user_id=int(data["user_id"]), backend=str(data["backend"]), next_url=str(data["next"]), step=str(data["step"])
    )


def pending_login_clear(*, request: Any) -> None:
    request.session.pop(PENDING_SESSION_KEY, None)


# --- services ---------------------------------------------------------------------------------------------------


def two_factor_enrolment_start(*, user: Any) -> TOTPDevice:
    """The unconfirmed authenticator the user is setting up (created once, so reloading keeps the secret)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    if device is None:
        device = TOTPDevice(user=user, name=DEVICE_NAME, confirmed=False)
        device.full_clean()
        device.save()
    return device


@transaction.atomic
def two_factor_enrolment_confirm(*, user: Any, code: str, request: Any = None) -> TOTPDevice:
    """Confirm the authenticator with a code it shows; from now on the user's logins ask for a code."""
    device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("-id").first()
    if device is None:
        raise HubValidationError(
            "There is no authenticator being set up.", hint="Open the two-factor page again to get a new QR code."
        )
    if not device.verify_token(_clean_code(code)):
        raise HubValidationError(
            "The code does not match.",
            errors=[{"field": "code", "message": "Type the 6-digit code your app shows now."}],
            hint="Check that the phone's clock is right, then type the current code.",
        )
    device.confirmed = True
    device.full_clean()
    device.save()
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    audit_record(
        action=AuditAction.TWO_FACTOR_ENROLLED,
        actor=user,
        object_type="auth.user",
        object_id=user.pk,
        summary=f"Two-factor login enrolled for '{user.get_username()}'",
        ip=client_ip(request) if request is not None else None,
    )
    return device


def two_factor_verify(*, user: Any, code: str, request: Any = None) -> bool:
    """Check a login code. A wrong code is audited as a failed login and counts towards the login lockout."""
    ip = client_ip(request) if request is not None else None
    username = user.get_username()
    device = two_factor_device(user=user)
    if device is None or login_locked(username=username, ip=ip):
        return False
    allowed, _ = device.verify_is_allowed()
    if allowed and device.verify_token(_clean_code(code)):
        return True
    locked = login_failure_register(username=username, ip=ip)
    audit_record(
        action=AuditAction.LOGIN_FAILED,
        object_type="auth.user",
        object_id=username,
        summary=f"Wrong two-factor code for '{username}'",
        details={"stage": "two_factor"},
        ip=ip,
    )
    if locked:
        audit_record(
            action=AuditAction.LOGIN_LOCKED,
            object_type="auth.user",
            object_id=username,
            summary=f"Login for '{username}' from {ip or 'unknown address'} locked after repeated failures",
            ip=ip,
        )
    return False


@transaction.atomic
def two_factor_reset(*, user: Any, by: Any = None, reason: str = "", request: Any = None) -> int:
    """Remove the user's authenticators (a lost phone): their next login asks them to enrol again if required."""
    deleted, _ = TOTPDevice.objects.filter(user=user).delete()
    audit_record(
        action=AuditAction.TWO_FACTOR_RESET,
        actor=by,
        object_type="auth.user",
        object_id=user.pk,
        summary=f"Two-factor login reset for '{user.get_username()}'" + (f": {reason}" if reason else ""),
        details={"user": user.get_username(), "devices_removed": deleted, "reason": reason},
        request=request,
    )
    return deleted


def _clean_code(code: str) -> str:
    return "".join(str(code or "").split())
