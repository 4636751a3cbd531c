"""Middleware of the security layer: the Content-Security-Policy header, the API body-size limit, the
refusal of NUL characters in API query strings, and the request context of audit events."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from integrationhub.errors import PROBLEM_CONTENT_TYPE, problem

CSP_HEADER = "Content-Security-Policy"
API_PREFIX = "/api/"
NUL = "\x00"


class ContentSecurityPolicyMiddleware:
    """Adds HUB_CONTENT_SECURITY_POLICY to every response that has none (scripts only from this origin)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = getattr(settings, "HUB_CONTENT_SECURITY_POLICY", "")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and CSP_HEADER not in response:
            response[CSP_HEADER] = self.policy
        return response


class AuditContextMiddleware:
    """Binds the request being served for the audit: an event written anywhere below (a service, a signal
    receiver, an admin save) takes its actor, API key, client address and user agent from it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from integrationhub.audit import audit_request_bound

        with audit_request_bound(request):
            return self.get_response(request)


class ApiBodyLimitMiddleware:
    """Refuses an API request whose declared body is over DATA_UPLOAD_MAX_MEMORY_SIZE with a 413 problem+json,
    and one with a NUL character in its query string with a 400.

    Django raises RequestDataTooBig only when the body is read, deep in a view, where it would surface as a
    500; checked here, before any view, the client learns the limit. (LimitedJSONParser also catches a
    body that arrives without a Content-Length.)
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and request.path.startswith(API_PREFIX):
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                return _too_large(declared, limit)
        if request.path.startswith(API_PREFIX):
            # PostgreSQL text cannot hold NUL (0x00): a query parameter with one would fail in the database.
            # Django's form fields refuse it, but not every view reads its parameters through a form.
            for name, value in request.GET.lists():
                if NUL in name or any(NUL in item for item in value):
                    body = problem(
                        status=400,
                        title="Some fields are not valid",
                        detail=f"{name.replace(NUL, '')}: Null characters are not allowed.",
                        code="validation_error",
                        errors=[{"field": name.replace(NUL, ""), "message": "Null characters are not allowed."}],
                    )
                    return JsonResponse(body, status=400, content_type=PROBLEM_CONTENT_TYPE)
        return self.get_response(request)


def _too_large(declared: int, limit: int) -> JsonResponse:
    body = problem(
        status=413,
        title="The request body is too large",
        detail=f"The body has {declared} bytes; the limit is {limit} bytes.",
        code="payload_too_large",
        hint="Send large data sets as a file drop or in pages.",
    )
    return JsonResponse(body, status=413, content_type=PROBLEM_CONTENT_TYPE)
