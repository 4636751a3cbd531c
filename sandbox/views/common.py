"""What every sandbox system shares: JSON parsing, bearer tokens, health, and the control API (_faults, _settings)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.forms.models import model_to_dict
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from integrationhub.env import env_str
from sandbox import services
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxFaultProfile, SandboxSetting

CONTROL_TOKEN_HEADER = "X-Sandbox-Control-Token"
FAULT_FIELDS = [
    f.name
    for f in SandboxFaultProfile._meta.concrete_fields
    if f.name not in ("id", "system", "generation", "updated_at")
]
SETTING_FIELDS = [
    "client_id",
    "client_secret",
    "api_token",
    "account_id",
    "token_ttl_seconds",
    "page_size",
    "webhook_url",
    "webhook_secret",
]


class BadRequestBody(Exception):
    """The body is not a JSON object."""


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object; BadRequestBody when it is not one."""
    if not request.body:
        return {}
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return request.POST.dict()  # an action posted as a form (or an empty form) carries no JSON
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequestBody(f"The body is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise BadRequestBody("The body must be a JSON object.")
    return data


def bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") else ""


def health(request: HttpRequest) -> HttpResponse:
    """Unauthenticated liveness of a sandbox system (fault injection still applies)."""
    return JsonResponse({"status": "ok"})


def control_token() -> str:
    # Read from settings when the project defines it, else from the environment; empty disables the token.
    return str(getattr(settings, "SANDBOX_CONTROL_TOKEN", "") or env_str("SANDBOX_CONTROL_TOKEN", ""))


def control_denied(request: HttpRequest, *, permission: str) -> HttpResponse | None:
    """None when the caller may use the control API: the control token, or a staff user with `permission`."""
    token = request.headers.get(CONTROL_TOKEN_HEADER, "")
    expected = control_token()
    if token:
        if expected and secrets.compare_digest(token, expected):
            return None
        return JsonResponse({"error": "forbidden", "detail": "Wrong sandbox control token."}, status=403)
    user = request.user
    if not user.is_authenticated:
        return JsonResponse(
            {"error": "unauthorized", "detail": f"Log in as an integration admin or send {CONTROL_TOKEN_HEADER}."},
            status=401,
        )
    if not (user.is_staff and user.has_perm(permission)):
        return JsonResponse({"error": "forbidden", "detail": f"Needs the {permission} permission."}, status=403)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        # A session-authenticated write must carry the CSRF token like any other browser write.
        # process_view only checks the token; it never calls the view, so none is passed.
        rejected = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]
        if rejected is not None:
            return rejected
    return None


def _fault_json(profile: SandboxFaultProfile) -> dict[str, Any]:
    return {"system": profile.system, **model_to_dict(profile, fields=FAULT_FIELDS)}


def _validation_response(error: Exception) -> JsonResponse:
    detail = getattr(error, "message_dict", None) or {"": [str(error)]}
    return JsonResponse({"error": "validation_error", "fields": detail}, status=422)


def control_faults_view(system: str) -> Callable[[HttpRequest], HttpResponse]:
    """GET the fault profile of `system`; PUT replaces it (left-out fields take their defaults); DELETE resets it."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        permission = (
            "sandbox.view_sandboxfaultprofile" if request.method == "GET" else "sandbox.change_sandboxfaultprofile"
        )
        denied = control_denied(request, permission=permission)
        if denied is not None:
            return denied
        profile = services.fault_profile_ensure(system=system)
        user = request.user if request.user.is_authenticated else None
        if request.method == "GET":
            return JsonResponse(_fault_json(profile))
        if request.method == "DELETE":
            return JsonResponse(
                _fault_json(services.fault_profile_reset(system=system, user=user, reason="reset via API"))
            )
        if request.method != "PUT":
            return JsonResponse({"error": "method_not_allowed"}, status=405)
        try:
            data = json_body(request)
        except BadRequestBody as error:
            return JsonResponse({"error": "bad_request", "detail": str(error)}, status=400)
        unknown = sorted(set(data) - set(FAULT_FIELDS) - {"system", "reason"})
        if unknown:
            return JsonResponse(
                {"error": "validation_error", "fields": {name: ["Unknown field."] for name in unknown}}, status=422
            )
        defaults = SandboxFaultProfile(system=system)
        for name in FAULT_FIELDS:
            setattr(profile, name, data.get(name, getattr(defaults, name)))
        from django.core.exceptions import ValidationError

        try:
            services.fault_profile_save(profile=profile, user=user, reason=str(data.get("reason") or "changed via API"))
        except (ValidationError, TypeError, ValueError) as error:
            return _validation_response(error)
        return JsonResponse(_fault_json(profile))

    return view


def control_settings_view(system: str) -> Callable[[HttpRequest], HttpResponse]:
    """GET the setting of `system` (credentials, page size, webhook target); PATCH changes the fields sent."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        permission = "sandbox.change_sandboxsetting"  # reading shows secrets: change permission for both
        denied = control_denied(request, permission=permission)
        if denied is not None:
            return denied
        setting = services.sandbox_setting_ensure(system=system)
        if request.method == "PATCH":
            try:
                data = json_body(request)
            except BadRequestBody as error:
                return JsonResponse({"error": "bad_request", "detail": str(error)}, status=400)
            unknown = sorted(set(data) - set(SETTING_FIELDS) - {"reason"})
            if unknown:
                return JsonResponse(
                    {"error": "validation_error", "fields": {name: ["Unknown field."] for name in unknown}}, status=422
                )
            for name in SETTING_FIELDS:
                if name in data:
                    setattr(setting, name, data[name])
            from django.core.exceptions import ValidationError

            user = request.user if request.user.is_authenticated else None
            try:
                services.sandbox_setting_save(setting=setting, user=user, reason=str(data.get("reason") or "via API"))
            except ValidationError as error:
                return _validation_response(error)
        elif request.method != "GET":
            return JsonResponse({"error": "method_not_allowed"}, status=405)
        return JsonResponse({"system": system, **model_to_dict(setting, fields=SETTING_FIELDS)})

    return view


def setting(system: str) -> SandboxSetting:
    return services.sandbox_setting_ensure(system=system)


SYSTEMS = SandboxSystem.values
