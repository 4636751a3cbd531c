"""Authentication: API keys for machine clients (with their scopes), and the admin login lockout.

A key acts as its owner user, so the owner's role permissions apply; its scopes narrow that further.
Browser sessions keep role permissions only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from integrationhub import scopes
from integrationhub.throttling import budget_exceeded, budget_spend

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


def client_ip(request: Any) -> str | None:
    meta = getattr(request, "META", None) or {}
    return meta.get("REMOTE_ADDR") or None


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
        rate = getattr(settings, "HUB_API_AUTH_FAILURE_RATE", "30/min")
        wait = budget_exceeded(scope="api-key-failures", ident=ip or "-", rate=rate)
        if wait is not None:
            raise exceptions.Throttled(wait=wait, detail="Too many refused API keys from this address.")
        try:
            api_key = api_key_verify(key=key)
        except ApiKeyRefused as refused:
            budget_spend(scope="api-key-failures", ident=ip or "-", rate=rate)
            audit_record(
                action=AuditAction.API_KEY_AUTH_FAILED,
                object_type="integrationhub.apikey",
                # The first 8 characters identify a key without revealing it.
                object_id=key.split(".", 1)[0][:8],
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


class ApiKeyScopePermission(BasePermission):
    """For API-key requests: the key must hold the view's scope (see integrationhub.scopes)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        scope_check(request=request, view=view)
        return True


# --- admin login lockout ------------------------------------------------------------------------------------


def _max_failures() -> int:
    return int(getattr(settings, "HUB_LOGIN_MAX_FAILURES", 5))


def _lockout_minutes() -> int:
    return int(getattr(settings, "HUB_LOGIN_LOCKOUT_MINUTES", 15))


def _lockout_key(username: str, ip: str | None) -> str:
    digest = hashlib.sha256(f"{username.lower()}|{ip or '-'}".encode()).hexdigest()[:32]
    return f"hub:login-failures:{digest}"


def login_locked(*, username: str, ip: str | None) -> bool:
    return (cache.get(_lockout_key(username, ip)) or 0) >= _max_failures()


def login_failure_register(*, username: str, ip: str | None) -> bool:
    """Count a failed login of username from ip; True exactly when this failure starts a lockout."""
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
    return count == _max_failures()


def login_failures_clear(*, username: str, ip: str | None) -> None:
    cache.delete(_lockout_key(username, ip))


class LoginLockoutBackend(BaseBackend):
    """First in AUTHENTICATION_BACKENDS: refuses every password check of a locked username + address.

    Raising PermissionDenied stops Django trying the other backends, and Django still sends
    user_login_failed, so the attempt is audited. Locking per username *and* address means an attacker
    cannot lock a real user out from elsewhere.
    """

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any):
        if username and login_locked(username=username, ip=client_ip(request) if request is not None else None):
            raise DjangoPermissionDenied("locked out after repeated failed logins")
        return None

    def get_user(self, user_id: Any) -> Any:
        # Sessions record the backend that logged the user in; force_login and some tools pick the first
        # backend in the list, so this one must be able to load the user too.
        return ModelBackend().get_user(user_id)
