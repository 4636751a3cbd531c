"""Authentication: API keys for machine clients (with their scopes), the anonymous budget, and the admin login
lockout.

A key acts as its owner user, so the owner's role permissions apply; its scopes narrow that further.
Browser sessions keep role permissions only.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from integrationhub import scopes
from integrationhub.throttling import anonymous_budget_spend, budget_spend, client_ip, counter_add

# DRF imports this module while it defines APIView (its default classes are read then), and
# integrationhub.errors imports DRF's views: so models, services and the audit are imported inside the
# functions below, never at the top, or the first import of rest_framework.views would be circular.

AUTH_SCHEME = "Api-Key"
KEY_HEADER = "X-Api-Key"


class ApiKeyAuthFailed(exceptions.AuthenticationFailed):
    """A 401 that keeps the service's detail and hint for the problem+json body."""

    def __init__(self, refused: Any) -> None:
        super().__init__(refused.detail, code=refused.code)
        self.hint = refused.hint


def presented_key(request: Any) -> str | None:
    """The key from `Authorization: Api-Key <key>` or `X-Api-Key: <key>`; None when neither is sent."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == AUTH_SCHEME.lower():
        return value.strip()
    alternative = request.META.get("HTTP_X_API_KEY")
    return alternative.strip() if alternative is not None else None


__all__ = ["client_ip"]  # re-exported: the audit, two-factor login and /metrics read the address from here


def scope_check(*, request: Any, view: Any) -> None:
    """Refuse (403) an API-key request whose key lacks the scope the view needs for this method."""
    from integrationhub.models import ApiKey

    api_key = getattr(request, "auth", None)
    if not isinstance(api_key, ApiKey):
        return
    try:
        needed = scopes.required_scope(view=view, method=request.method)
    except scopes.ScopeNotAvailable as error:
        raise exceptions.PermissionDenied(str(error)) from None
    if needed not in api_key.scopes:
        raise exceptions.PermissionDenied(
            f"The API key {api_key.prefix}… lacks the scope {needed}; it has {', '.join(api_key.scopes) or 'none'}."
        )


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key <key>` (or `X-Api-Key`): the request runs as the key's owner, `request.auth` is the key.

    The scope is checked here as well as by ApiKeyScopePermission: a view that replaces its permission
    classes (a custom action, a plain IsAuthenticated list) would otherwise let every key through.
    """

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        from integrationhub.apikeys import ApiKeyRefused, api_key_verify
        from integrationhub.audit import AuditAction, audit_record

        key = presented_key(request)
        if key is None:
            return None
        ip = client_ip(request)
        try:
            api_key = api_key_verify(key=key)
        except ApiKeyRefused as refused:
            # The first 8 characters identify a key without revealing it.
            prefix = key.split(".", 1)[0][:8]
            # Keyed by the presented prefix and the address, and spent only by refused keys: a valid key is
            # verified before any budget is looked at, so no amount of guessing from an address (or a NAT
            # shared with a guesser) locks a real client out. Past the budget the guesses are not audited.
            rate = getattr(settings, "HUB_API_AUTH_FAILURE_RATE", "30/min")
            ident = f"{ip or '-'}|{hashlib.sha256(prefix.encode()).hexdigest()[:16]}"
            wait = budget_spend(scope="api-key-failures", ident=ident, rate=rate)
            if wait is not None:
                raise exceptions.Throttled(
                    wait=math.ceil(wait),
                    detail=f"Too many refused attempts with API key {prefix}… from this address.",
                ) from None
            audit_record(
                action=AuditAction.API_KEY_AUTH_FAILED,
                object_type="integrationhub.apikey",
                object_id=prefix,
                summary=refused.detail[:500],
                ip=ip,
            )
            raise ApiKeyAuthFailed(refused) from None
        request.auth = api_key  # scope_check reads it before DRF assigns the tuple
        view = getattr(request, "parser_context", {}).get("view")
        if view is not None:
            scope_check(request=request, view=view)
        return api_key.owner, api_key

    def authenticate_header(self, request: Any) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials, with the scheme to use.
        return AUTH_SCHEME


class AnonymousBudgetAuthentication(BaseAuthentication):
    """Last authenticator: DRF reaches it only when no other one recognised the caller, so the request is
    anonymous. It spends the address's HUB_API_ANON_RATE there, before the permission check: DRF runs
    throttles after permissions, so an anonymous call to an endpoint that needs a user would be refused with
    401 before any throttle, and scanning or guessing would never be slowed down."""

    def authenticate(self, request: Any) -> None:
        wait = anonymous_budget_spend(request)
        if wait is not None:
            raise exceptions.Throttled(
                wait=math.ceil(wait), detail="Too many requests without credentials from this address."
            )
        return None


class ApiKeyScopePermission(BasePermission):
    """For API-key requests: the key must hold the view's scope (see integrationhub.scopes)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        scope_check(request=request, view=view)
        return True


# --- admin login lockout ------------------------------------------------------------------------------------


def _max_failures() -> int:
    return int(getattr(settings, "HUB_LOGIN_MAX_FAILURES", 5))


def _max_address_failures() -> int:
    return int(getattr(settings, "HUB_LOGIN_MAX_FAILURES_PER_ADDRESS", 30))


def _lockout_minutes() -> int:
    return int(getattr(settings, "HUB_LOGIN_LOCKOUT_MINUTES", 15))


def _lockout_key(username: str, ip: str | None) -> str:
    digest = hashlib.sha256(f"{username.lower()}|{ip or '-'}".encode()).hexdigest()[:32]
    return f"hub:login-failures:{digest}"


def _address_window(now: float) -> tuple[str, int, float]:
    """The fixed window of the per-address count: its key part, its length and the seconds left in it."""
    seconds = max(1, _lockout_minutes() * 60)
    window = int(now // seconds)
    return f"{seconds}:{window}", seconds, (window + 1) * seconds - now


def _address_key(ip: str | None, now: float) -> str:
    return f"hub:login-address-failures:{ip or '-'}:{_address_window(now)[0]}"


@dataclass(frozen=True)
class LoginLockout:
    """Why logins are refused without looking at the password, and until when."""

    ACCOUNT = "account"  # this user name from this address: HUB_LOGIN_MAX_FAILURES
    ADDRESS = "address"  # every user name from this address (password spraying): HUB_LOGIN_MAX_FAILURES_PER_ADDRESS

    reason: str
    failures: int
    until: datetime.datetime

    @property
    def minutes_left(self) -> int:
        return max(1, math.ceil((self.until - datetime.datetime.now(datetime.UTC)).total_seconds() / 60))

    def message(self) -> str:
        """What the login page says: that the login is locked, for how long, and what to do."""
        wait = f"{self.minutes_left} minute{'s' if self.minutes_left != 1 else ''}"
        at = f"{self.until:%H:%M} UTC"
        if self.reason == self.ADDRESS:
            return (
                f"Logins from your network address are locked for {wait} (until {at}) after {self.failures} failed "
                "logins from it. Try again after that; if nobody on your network was trying to log in, tell your "
                "administrator."
            )
        return (
            f"This account is locked for {wait} (until {at}) after {self.failures} failed logins from your address. "
            "Each further attempt, even with the right password, starts the wait again: wait, then log in once."
        )


def login_lockout(*, username: str, ip: str | None, now: float | None = None) -> LoginLockout | None:
    """The lockout that refuses a login of `username` from `ip` now, or None."""
    now = time.time() if now is None else now
    address_failures = int(cache.get(_address_key(ip, now)) or 0)
    if address_failures >= _max_address_failures():
        until = now + _address_window(now)[2]
        return LoginLockout(
            LoginLockout.ADDRESS, address_failures, datetime.datetime.fromtimestamp(until, datetime.UTC)
        )
    if not username:
        return None
    key = _lockout_key(username, ip)
    values = cache.get_many([key, f"{key}:last"])
    failures = int(values.get(key) or 0)
    if failures < _max_failures():
        return None
    last = float(values.get(f"{key}:last") or now)
    until = last + _lockout_minutes() * 60
    return LoginLockout(LoginLockout.ACCOUNT, failures, datetime.datetime.fromtimestamp(until, datetime.UTC))


def login_locked(*, username: str, ip: str | None) -> bool:
    return login_lockout(username=username, ip=ip) is not None


def login_failure_register(*, username: str, ip: str | None) -> bool:
    """Count a failed login of username from ip, for that user name and for the address; True exactly when
    this failure locks the user name out (a lockout of the whole address is audited here)."""
    now = time.time()
    key = _lockout_key(username, ip)
    timeout = _lockout_minutes() * 60
    cache.add(key, 0, timeout=timeout)
    try:
        count = cache.incr(key)
    except ValueError:
        cache.add(key, 1, timeout=timeout)
        count = 1
    # Each failure pushes the lockout's end: it ends M minutes after the last attempt.
    cache.touch(key, timeout)
    cache.set(f"{key}:last", now, timeout=timeout)
    # Per address in fixed windows, across user names: trying one password on many accounts (spraying)
    # stays under each account's own limit.
    _, window_seconds, _ = _address_window(now)
    address_count = counter_add(_address_key(ip, now), 1, timeout=window_seconds + 1)
    if address_count == _max_address_failures():
        from integrationhub.audit import AuditAction, audit_record

        audit_record(
            action=AuditAction.LOGIN_LOCKED,
            object_type="client_address",
            object_id=ip or "-",
            summary=f"Logins from {ip or 'unknown address'} locked after {address_count} failures for any user name",
            ip=ip,
        )
    return count == _max_failures()


def login_failures_clear(*, username: str, ip: str | None) -> None:
    """A successful login clears its user name's count; the address's count stays (a sprayer may own one
    account)."""
    key = _lockout_key(username, ip)
    cache.delete_many([key, f"{key}:last"])


class LoginLockoutBackend(BaseBackend):
    """First in AUTHENTICATION_BACKENDS: refuses every password check of a locked username + address.

    Raising PermissionDenied stops Django trying the other backends, and Django still sends
    user_login_failed, so the attempt is audited. Locking per username *and* address means an attacker
    cannot lock a real user out from elsewhere; the per-address limit stops one address trying a password
    on many user names.
    """

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any):
        if login_locked(username=username or "", ip=client_ip(request) if request is not None else None):
            raise DjangoPermissionDenied("locked out after repeated failed logins")
        return None

    def get_user(self, user_id: Any) -> Any:
        # Sessions record the backend that logged the user in; force_login and some tools pick the first
        # backend in the list, so this one must be able to load the user too.
        return ModelBackend().get_user(user_id)
