"""The hub's one application error family, and its rendering as RFC 9457 problem+json."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_default_handler

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"


class HubError(Exception):
    """Base of every error the hub raises on purpose; carries an HTTP status and a next step for the user."""

    status = 400
    code = "hub_error"
    title = "The request could not be processed"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, hint: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.hint = hint


class HubValidationError(HubError):
    status = 422
    code = "validation_error"
    title = "Some fields are not valid"


class HubConflictError(HubError):
    status = 409
    code = "conflict"
    title = "The change conflicts with an existing record"


class HubNotFoundError(HubError):
    status = 404
    code = "not_found"
    title = "Not found"


def problem(
    *, status: int, title: str, detail: str, code: str, errors: list[dict[str, Any]] | None = None, hint: str = ""
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://integrationhub.local/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if hint:
        body["hint"] = hint
    return body


def flatten_field_errors(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Turn DRF's nested error structure into a flat list of {"field": "a.b[0].c", "message": ...}."""
    flat: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("non_field_errors", "__all__") else str(key)
            path = f"{prefix}.{name}" if prefix and name else (name or prefix)
            flat.extend(flatten_field_errors(value, path))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            flat.extend({"field": prefix, "message": str(item)} for item in detail)
        else:
            for index, item in enumerate(detail):
                flat.extend(flatten_field_errors(item, f"{prefix}[{index}]"))
    else:
        flat.append({"field": prefix, "message": str(detail)})
    return flat


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: every error leaves as problem+json, and a server error never leaks internals."""
    if isinstance(exc, HubError):
        body = problem(
            status=exc.status, title=exc.title, detail=exc.detail, code=exc.code, errors=exc.errors, hint=exc.hint
        )
        return Response(body, status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, DjangoValidationError):
        django_detail: Any = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        exc = drf_exceptions.ValidationError(django_detail)
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_default_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in API view", extra={"view": type(context.get("view")).__name__})
        body = problem(
            status=500,
            title="Internal error",
            detail="The hub hit an unexpected error. It has been logged; quote the correlation id when reporting it.",
            code="internal_error",
        )
        return Response(body, status=500, content_type=PROBLEM_CONTENT_TYPE)

    if isinstance(exc, drf_exceptions.ValidationError):
        errors = flatten_field_errors(exc.detail)
        body = problem(
            status=response.status_code,
            title="Some fields are not valid",
            detail="; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors),
            code="validation_error",
            errors=errors,
            hint="Correct the fields listed in `errors` and send the request again.",
        )
    else:
        detail = exc.detail if isinstance(exc, drf_exceptions.APIException) else str(exc)
        code = exc.default_code if isinstance(exc, drf_exceptions.APIException) else "error"
        body = problem(status=response.status_code, title=str(detail), detail=str(detail), code=str(code))
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
