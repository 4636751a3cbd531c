"""API views of the sync app: the inbound webhook endpoint.

A plain Django view rather than DRF on purpose: it is the hottest path of the hub, it authenticates by
signature instead of session, and it must read the raw body untouched to verify the signature.
"""

from __future__ import annotations

import re

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrationhub.errors import PROBLEM_CONTENT_TYPE, HubError, problem
from integrationhub.logging import CORRELATION_HEADER, bind_correlation_id, new_correlation_id
from sync.errors import PayloadTooLargeError
from sync.services import max_body_bytes, message_ingest

TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def correlation_id_from(request: HttpRequest) -> str:
    """X-Correlation-ID if sent, else the trace id of a W3C traceparent, else a new id."""
    supplied = request.headers.get(CORRELATION_HEADER, "")
    if supplied and supplied.isprintable():
        return supplied[:64]
    match = TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    return getattr(request, "correlation_id", None) or new_correlation_id()


def _problem(error: HubError) -> JsonResponse:
    body = problem(status=error.status, title=error.title, detail=error.detail, code=error.code, hint=error.hint)
    return JsonResponse(body, status=error.status, content_type=PROBLEM_CONTENT_TYPE)


@csrf_exempt
@require_POST
def inbound_webhook(request: HttpRequest, system_slug: str, event_type: str) -> JsonResponse:
    """POST /api/v1/inbound/<system-slug>/<event-type>/: 202 stored, 200 duplicate, 4xx problem+json."""
    correlation_id = correlation_id_from(request)
    bind_correlation_id(correlation_id)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    try:
        if declared > max_body_bytes():
            # Refused before the body is read into memory.
            raise PayloadTooLargeError(
                f"The body has {declared} bytes; the limit is {max_body_bytes()}.",
                hint="Send large data sets as a file drop or page them into several events.",
            )
        result = message_ingest(
            system_slug=system_slug,
            event_type=event_type,
            headers={key.lower(): value for key, value in request.headers.items()},
            body=request.body,
            correlation_id=correlation_id,
        )
    except HubError as error:
        return _problem(error)
    body = {"message_id": result.message_id, "correlation_id": result.correlation_id}
    if result.duplicate:
        return JsonResponse({**body, "duplicate": True}, status=200)
    return JsonResponse(body, status=202)
