"""Django's error pages for requests that never reach a DRF view (no URL matched, a malformed request, an
error outside a view): under /api/ they answer problem+json like the API itself; elsewhere Django's pages."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from integrationhub.errors import PROBLEM_CONTENT_TYPE, problem

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _problem(status: int, title: str, detail: str, code: str, hint: str = "") -> JsonResponse:
    body = problem(status=status, title=title, detail=detail, code=code, hint=hint)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


def page_not_found(request: HttpRequest, exception: Any) -> HttpResponse:
    if _is_api(request):
        return _problem(
            404,
            "Not found",
            "No API endpoint or record has this URL.",
            "not_found",
            hint="Check the path and the id against the schema at /api/schema/.",
        )
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Any) -> HttpResponse:
    if _is_api(request):
        return _problem(
            400,
            "The request is malformed",
            "The hub could not read this request (too many fields, a bad host or a broken body).",
            "bad_request",
        )
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Any) -> HttpResponse:
    if _is_api(request):
        return _problem(403, "Forbidden", "You may not do this.", "permission_denied")
    return defaults.permission_denied(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _problem(
            500,
            "Internal error",
            "The hub hit an unexpected error. It has been logged; quote the correlation id when reporting it.",
            "internal_error",
        )
    return defaults.server_error(request)
