"""The sandbox analytics warehouse: an append-only event sink, so tests and the demo can read what arrived.

Auth: `Authorization: Bearer <token>` (the system's api_token). POST datasets/<dataset>/events takes
{"table", "record"} and an `Idempotency-Key` header: the same key answers the stored event with 200 instead
of 201, so a retried delivery is stored once. GET lists a dataset's events (filters: table, idempotency_key,
record_id), ordered by arrival, paged by `after` (the last id read) and `limit`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from sandbox import selectors, services
from sandbox.choices import SandboxSystem
from sandbox.faults import with_faults
from sandbox.models import SandboxRecord
from sandbox.views.common import BadRequestBody, bearer_token, json_body

SYSTEM = SandboxSystem.ANALYTICS
MAX_LIMIT = 1000
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def render(record: SandboxRecord) -> dict[str, Any]:
    return {
        "id": int(record.external_id),
        "dataset": record.object_type,
        **record.data,
        "idempotency_key": record.idempotency_key,
        "received_at": record.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def analytics_auth(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not services.static_token_is_valid(system=SYSTEM, token=bearer_token(request)):
            return error(401, "unauthorized", "Missing or invalid bearer token.")
        return view(request, *args, **kwargs)

    return csrf_exempt(with_faults(SYSTEM)(wrapped))


@analytics_auth
def whoami(request: HttpRequest) -> HttpResponse:
    """GET /whoami: proves the base URL and the token."""
    return JsonResponse({"system": SYSTEM, "name": "Sandbox analytics warehouse"})


def _list(request: HttpRequest, dataset: str) -> HttpResponse:
    try:
        after = int(request.GET.get("after", "0") or 0)
        limit = max(1, min(MAX_LIMIT, int(request.GET.get("limit", "100"))))
    except ValueError:
        return error(400, "bad_request", "after and limit must be integers.")
    qs = selectors.records(system=SYSTEM, object_type=dataset).filter(pk__gt=after).order_by("pk")
    if request.GET.get("idempotency_key"):
        qs = qs.filter(idempotency_key=request.GET["idempotency_key"])
    if request.GET.get("table"):
        qs = qs.filter(data__table=request.GET["table"])
    if request.GET.get("record_id"):
        qs = qs.filter(data__record__id=request.GET["record_id"])
    rows = list(qs[: limit + 1])
    return JsonResponse({"results": [render(row) for row in rows[:limit]], "has_more": len(rows) > limit})


def _create(request: HttpRequest, dataset: str) -> HttpResponse:
    try:
        data = json_body(request)
    except BadRequestBody as exc:
        return error(400, "bad_request", str(exc))
    table, record = data.get("table"), data.get("record")
    if not isinstance(table, str) or not NAME.match(table):
        return error(422, "validation_error", "table must be a name of letters, digits and underscores.")
    if not isinstance(record, dict):
        return error(422, "validation_error", "record must be a JSON object.")
    key = request.headers.get("Idempotency-Key", "")
    stored, created = services.record_create(
        system=SYSTEM, object_type=dataset, data={"table": table, "record": record}, idempotency_key=key
    )
    return JsonResponse(render(stored), status=201 if created else 200)


@analytics_auth
def events(request: HttpRequest, dataset: str) -> HttpResponse:
    """GET lists the events of a dataset; POST appends one (idempotent by `Idempotency-Key`)."""
    if not NAME.match(dataset):
        return error(404, "not_found", f"No dataset {dataset!r}.")
    if request.method == "GET":
        return _list(request, dataset)
    if request.method == "POST":
        return _create(request, dataset)
    return error(405, "method_not_allowed", f"{request.method} is not allowed here.")
