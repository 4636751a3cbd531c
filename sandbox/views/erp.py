"""The sandbox ERP: a plain JSON CRUD API for the legal entities that do not run Tryton.

Auth: `X-API-Key: <key>`. Lists take `updated_since` (inclusive), `cursor` (opaque, from `next_cursor`)
and `limit`, and are ordered by (updated_at, id): a record changed while a client pages moves behind the
cursor and comes again, never skipped. POST takes an `Idempotency-Key` header: the same key answers the
same record with 200 instead of 201. Amounts and hours are decimal strings.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import wraps
from typing import Any

from dateutil.parser import isoparse
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from integrationhub.errors import HubConflictError, HubValidationError
from sandbox import selectors, services
from sandbox.choices import ErpInvoiceStatus, ErpObject, ErpPeriodStatus, ErpProjectStatus, SandboxSystem
from sandbox.faults import with_faults
from sandbox.models import SandboxRecord
from sandbox.views.common import BadRequestBody, json_body

SYSTEM = SandboxSystem.ERP
MAX_LIMIT = 1000
API_KEY_HEADER = "X-API-Key"

# field -> kind: str, decimal, int (a reference id), date, list
FIELDS: dict[str, dict[str, str]] = {
    ErpObject.CLIENT: {
        "name": "str",
        "legal_entity": "str",
        "currency": "str",
        "country": "str",
        "tax_id": "str",
        "external_ref": "str",
        "status": "str",
    },
    ErpObject.PROJECT: {
        "client_id": "int",
        "code": "str",
        "name": "str",
        "legal_entity": "str",
        "currency": "str",
        "status": "str",
        "billing_type": "str",
        "contract_value": "decimal",
        "starts_on": "date",
        "ends_on": "date",
        "external_ref": "str",
    },
    ErpObject.TIME_ENTRY: {
        "project_id": "int",
        "date": "date",
        "hours": "decimal",
        "employee_ref": "str",
        # The ERP's own employee the line is booked to (the hub's resource link), as a real ERP needs it.
        "employee_id": "str",
        "role": "str",
        "cost_code": "str",
        "bill_rate": "decimal",
        "cost_rate": "decimal",
        "currency": "str",
        "description": "str",
        "source_ref": "str",
        "kind": "str",
        "amount": "decimal",
    },
    ErpObject.BILLING_EVENT: {
        "project_id": "int",
        "date": "date",
        "amount": "decimal",
        "currency": "str",
        "description": "str",
        "milestone_ref": "str",
        "source_ref": "str",
    },
    ErpObject.INVOICE: {
        "client_id": "int",
        "project_id": "int",
        "currency": "str",
        "amount": "decimal",
        "due_date": "date",
        "status": "str",
        "lines": "list",
        "external_ref": "str",
    },
    # The legal entity's accounting calendar: finance closes a period here and the hub's period pull reads it.
    ErpObject.PERIOD: {
        "name": "str",
        "legal_entity": "str",
        "start_date": "date",
        "end_date": "date",
        "status": "str",
    },
}
REQUIRED = {
    ErpObject.CLIENT: ["name", "legal_entity"],
    ErpObject.PROJECT: ["client_id", "name", "legal_entity"],
    ErpObject.TIME_ENTRY: ["project_id", "date", "hours"],
    ErpObject.BILLING_EVENT: ["project_id", "amount"],
    ErpObject.INVOICE: ["client_id", "amount"],
    ErpObject.PERIOD: ["name", "legal_entity", "start_date", "end_date"],
}
DEFAULTS: dict[str, dict[str, Any]] = {
    ErpObject.CLIENT: {"status": "active", "currency": "USD"},
    ErpObject.PROJECT: {
        "status": ErpProjectStatus.ACTIVE.value,
        "currency": "USD",
        "billing_type": "time_and_materials",
    },
    ErpObject.TIME_ENTRY: {"status": "posted", "currency": "USD"},
    ErpObject.BILLING_EVENT: {"status": "pending", "currency": "USD"},
    ErpObject.INVOICE: {"status": ErpInvoiceStatus.DRAFT.value, "currency": "USD", "lines": []},
    ErpObject.PERIOD: {"status": ErpPeriodStatus.OPEN.value},
}
REFERENCES = {"client_id": ErpObject.CLIENT, "project_id": ErpObject.PROJECT}
STATUSES = {
    ErpObject.PROJECT: set(ErpProjectStatus.values),
    ErpObject.INVOICE: set(ErpInvoiceStatus.values),
    ErpObject.CLIENT: {"active", "inactive"},
    ErpObject.PERIOD: set(ErpPeriodStatus.values),
}
POSTS_TO_PROJECT = {ErpObject.TIME_ENTRY, ErpObject.BILLING_EVENT}


def error(status: int, code: str, detail: str, fields: dict[str, str] | None = None) -> JsonResponse:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return JsonResponse(body, status=status)


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(record: SandboxRecord) -> dict[str, Any]:
    return {
        "id": int(record.external_id),
        **record.data,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
        "deleted": record.deleted,
    }


def _clean(
    object_type: str, data: dict[str, Any], *, creating: bool, known_references: dict[str, set[str]] | None = None
) -> dict[str, Any]:
    """Normalized fields, or HubValidationError naming each bad field.

    `known_references` (reference field -> ids that exist), when given, answers the reference checks
    without a query per record: the batch endpoint loads them once per request."""
    kinds = FIELDS[object_type]
    problems: dict[str, str] = {name: "Unknown field." for name in data if name not in kinds}
    cleaned: dict[str, Any] = {}
    for name, value in data.items():
        kind = kinds.get(name)
        if kind is None or value is None:
            cleaned[name] = value
            continue
        if kind == "decimal":
            try:
                cleaned[name] = str(Decimal(str(value)).quantize(Decimal("0.01")))
            except InvalidOperation:
                problems[name] = "A decimal number is required."
        elif kind == "int":
            if isinstance(value, bool) or not str(value).isdigit():
                problems[name] = "An id (integer) is required."
            else:
                cleaned[name] = int(value)
        elif kind == "date":
            try:
                cleaned[name] = datetime.strptime(str(value), "%Y-%m-%d").date().isoformat()
            except ValueError:
                problems[name] = "A date YYYY-MM-DD is required."
        elif kind == "list":
            if not isinstance(value, list):
                problems[name] = "A list is required."
            cleaned[name] = value
        else:
            cleaned[name] = str(value)
    if creating:
        problems.update(
            {
                name: "This field is required."
                for name in REQUIRED[object_type]  # type: ignore[index]  # checked against the routes' names
                if data.get(name) in (None, "")
            }
        )
    for name, target in REFERENCES.items():
        checkable = name in kinds and cleaned.get(name) is not None and name not in problems
        if not checkable:
            continue
        if known_references is not None and name in known_references:
            exists = str(cleaned[name]) in known_references[name]
        else:
            exists = (
                selectors.records(system=SYSTEM, object_type=target).filter(external_id=str(cleaned[name])).exists()
            )
        if not exists:
            problems[name] = f"No {target[:-1]} with id {cleaned[name]}."
    allowed = STATUSES.get(object_type)  # type: ignore[call-overload]  # a known object type (routed)
    if "status" in cleaned and allowed and cleaned["status"] not in allowed:
        problems["status"] = f"One of: {', '.join(sorted(allowed))}."
    if problems:
        raise HubValidationError(
            "Some fields are not valid.", errors=[{"field": k, "message": v} for k, v in problems.items()]
        )
    return {**(DEFAULTS[object_type] if creating else {}), **cleaned}


def _failure(exc: Exception) -> JsonResponse:
    if isinstance(exc, HubValidationError):
        return error(422, "validation_error", exc.detail, {e["field"]: e.get("message", "") for e in exc.errors})
    if isinstance(exc, HubConflictError):
        return error(409, "conflict", exc.detail)
    return error(404, "not_found", str(exc))


# --- auth ---------------------------------------------------------------------------------------------


def erp_auth(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        supplied = request.headers.get(API_KEY_HEADER, "")
        expected = services.sandbox_setting_ensure(system=SYSTEM).api_token
        if not supplied or not expected or not secrets.compare_digest(supplied, expected):
            return error(401, "unauthorized", f"Missing or invalid {API_KEY_HEADER} header.")
        return view(request, *args, **kwargs)

    return csrf_exempt(with_faults(SYSTEM)(wrapped))


@erp_auth
def whoami(request: HttpRequest) -> HttpResponse:
    """GET /whoami: proves the base URL and the API key; what a connector's health check should call."""
    return JsonResponse({"system": SYSTEM, "name": "Sandbox ERP", "api_version": "1"})


# --- cursor paging ------------------------------------------------------------------------------------


def encode_cursor(record: SandboxRecord) -> str:
    raw = json.dumps([record.updated_at.isoformat(), record.pk]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    value, pk = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return isoparse(value), int(pk)


def _list(request: HttpRequest, object_type: str) -> HttpResponse:
    try:
        since = selectors.parse_since(request.GET.get("updated_since", ""))
        after = decode_cursor(request.GET["cursor"]) if request.GET.get("cursor") else None
        default = services.sandbox_setting_ensure(system=SYSTEM).page_size
        limit = max(1, min(MAX_LIMIT, int(request.GET.get("limit", default))))
    except (ValueError, TypeError):
        return error(400, "bad_request", "updated_since, cursor or limit is not valid.")
    include_deleted = request.GET.get("include_deleted", "").lower() == "true"
    qs = selectors.records(system=SYSTEM, object_type=object_type, include_deleted=include_deleted)
    if since is not None:
        qs = qs.filter(updated_at__gte=since)
    for name in ("status", "external_ref", "legal_entity", "code", "source_ref"):
        if request.GET.get(name) and name in FIELDS[object_type]:
            qs = qs.filter(**{f"data__{name}": request.GET[name]})
    for name in ("client_id", "project_id"):
        if request.GET.get(name, "").isdigit() and name in FIELDS[object_type]:
            qs = qs.filter(**{f"data__{name}": int(request.GET[name])})
    if request.GET.get("idempotency_key"):
        qs = qs.filter(idempotency_key=request.GET["idempotency_key"])
    rows, more = selectors.keyset_page(qs, order_column="updated_at", tiebreak="id", after=after, size=limit)
    return JsonResponse(
        {
            "results": [render(row) for row in rows],
            "next_cursor": encode_cursor(rows[-1]) if rows else request.GET.get("cursor") or None,
            "has_more": more,
        }
    )


# --- writes -------------------------------------------------------------------------------------------


def _create(request: HttpRequest, object_type: str) -> HttpResponse:
    try:
        data = json_body(request)
    except BadRequestBody as exc:
        return error(400, "bad_request", str(exc))
    key = request.headers.get("Idempotency-Key", "") or str(data.pop("idempotency_key", "") or "")
    existing = selectors.record_by_idempotency_key(system=SYSTEM, object_type=object_type, key=key)
    if existing is not None:
        return JsonResponse(render(existing), status=200)
    try:
        cleaned = _clean(object_type, data, creating=True)
        if object_type in POSTS_TO_PROJECT:
            project = services.erp_project_require_active(project_id=cleaned["project_id"])
            services.erp_period_require_open(project=project, on_date=cleaned.get("date"))
    except (HubValidationError, HubConflictError) as exc:
        return _failure(exc)
    _time_entry_amount(object_type, cleaned)
    record, created = services.record_create(system=SYSTEM, object_type=object_type, data=cleaned, idempotency_key=key)
    if created and object_type == ErpObject.INVOICE:
        record = services.record_update(record=record, changes={"number": f"INV-{int(record.external_id):06d}"})
    return JsonResponse(render(record), status=201 if created else 200)


def _time_entry_amount(object_type: str, cleaned: dict[str, Any]) -> None:
    # An expense line brings its amount; a time line's amount is hours times the bill rate.
    if object_type == ErpObject.TIME_ENTRY and cleaned.get("bill_rate") and not cleaned.get("amount"):
        cleaned["amount"] = str((Decimal(cleaned["hours"]) * Decimal(cleaned["bill_rate"])).quantize(Decimal("0.01")))


def _update(request: HttpRequest, record: SandboxRecord) -> HttpResponse:
    try:
        data = json_body(request)
        status = data.pop("status", None) if record.object_type == ErpObject.INVOICE else None
        cleaned = _clean(record.object_type, data, creating=False)
        if record.object_type == ErpObject.INVOICE and record.data.get("status") != ErpInvoiceStatus.DRAFT and cleaned:
            raise HubConflictError(f"Invoice is {record.data.get('status')}; only a draft can be edited.")
        if record.object_type in POSTS_TO_PROJECT:
            raise HubConflictError("A posted entry cannot be edited; reverse it and post a new one.")
        record = services.record_update(record=record, changes=cleaned)
        if status is not None:
            _clean(record.object_type, {"status": status}, creating=False)
            record = services.erp_invoice_transition(record=record, status=status)
    except BadRequestBody as exc:
        return error(400, "bad_request", str(exc))
    except (HubValidationError, HubConflictError) as exc:
        return _failure(exc)
    return JsonResponse(render(record))


def collection(object_type: str) -> Callable[[HttpRequest], HttpResponse]:
    @erp_auth
    def view(request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            return _list(request, object_type)
        if request.method == "POST":
            return _create(request, object_type)
        return error(405, "method_not_allowed", f"{request.method} is not allowed here.")

    return view


def detail(object_type: str) -> Callable[..., HttpResponse]:
    @erp_auth
    def view(request: HttpRequest, record_id: int) -> HttpResponse:
        record = selectors.record_get(system=SYSTEM, object_type=object_type, external_id=str(record_id))
        if record is None:
            return error(404, "not_found", f"No {object_type} record with id {record_id}.")
        if request.method == "GET":
            return JsonResponse(render(record))
        if request.method == "PATCH":
            return _update(request, record)
        if request.method == "DELETE":
            if object_type == ErpObject.INVOICE and record.data.get("status") != ErpInvoiceStatus.DRAFT:
                return error(409, "conflict", "Only a draft invoice can be deleted.")
            if object_type in POSTS_TO_PROJECT:
                return error(409, "conflict", "A posted entry cannot be deleted; reverse it.")
            services.record_delete(record=record)
            return HttpResponse(status=204)
        return error(405, "method_not_allowed", f"{request.method} is not allowed here.")

    return view


def _invoice_action(status: str) -> Callable[..., HttpResponse]:
    @erp_auth
    def view(request: HttpRequest, record_id: int) -> HttpResponse:
        record = selectors.record_get(system=SYSTEM, object_type=ErpObject.INVOICE, external_id=str(record_id))
        if record is None or request.method != "POST":
            return error(404, "not_found", f"No invoice with id {record_id}.")
        try:
            return JsonResponse(render(services.erp_invoice_transition(record=record, status=status)))
        except HubConflictError as exc:
            return _failure(exc)

    return view


invoice_post = _invoice_action(ErpInvoiceStatus.POSTED)
invoice_pay = _invoice_action(ErpInvoiceStatus.PAID)


@erp_auth
def time_entry_reverse(request: HttpRequest, record_id: int) -> HttpResponse:
    """POST time-entries/<id>/reverse: a negative entry cancels the original (idempotent: once per entry)."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "Use POST.")
    try:
        reversal, created = services.erp_time_entry_reverse(external_id=str(record_id))
    except services.HubNotFoundError as exc:
        return error(404, "not_found", exc.detail)
    return JsonResponse(render(reversal), status=201 if created else 200)


# --- batch create -------------------------------------------------------------------------------------

BATCH_MAX_ITEMS = 1000


def _batch_item_error(index: int, key: str, exc: Exception) -> dict[str, Any]:
    body = json.loads(_failure(exc).content)
    status = 422 if isinstance(exc, HubValidationError) else 409
    return {"index": index, "idempotency_key": key, "status": status, **body}


@erp_auth
def time_entries_batch(request: HttpRequest) -> HttpResponse:
    """POST time-entries/batch {"items": [{"idempotency_key": ..., <time entry fields>}, ...]}: many entries in
    one call, each created once per idempotency key (a key already used answers its record with status 200).

    Every item gets its own result, in order: 201 created, 200 already there, 422 invalid, 409 project not
    active or period closed; one bad item never blocks the others. The referenced projects (and the closed
    periods of their legal entities) are read once for the whole batch.
    """
    if request.method != "POST":
        return error(405, "method_not_allowed", "Use POST.")
    try:
        body = json_body(request)
    except BadRequestBody as exc:
        return error(400, "bad_request", str(exc))
    items = body.get("items")
    if not isinstance(items, list) or not items or len(items) > BATCH_MAX_ITEMS:
        return error(400, "bad_request", f"Send items: a list of 1 to {BATCH_MAX_ITEMS} time entries.")
    if not all(isinstance(item, dict) and str(item.get("idempotency_key") or "") for item in items):
        return error(400, "bad_request", "Every item must be an object with a non-empty idempotency_key.")
    object_type = ErpObject.TIME_ENTRY
    keys = [str(item["idempotency_key"]) for item in items]
    existing = selectors.records_by_idempotency_keys(system=SYSTEM, object_type=object_type, keys=keys)
    project_ids = {str(item.get("project_id")) for item in items if str(item.get("project_id") or "").isdigit()}
    projects = {
        record.external_id: record
        for record in selectors.records(system=SYSTEM, object_type=ErpObject.PROJECT).filter(
            external_id__in=project_ids
        )
    }
    closed_periods = services.erp_closed_periods(
        legal_entities={str(project.data.get("legal_entity") or "") for project in projects.values()}
    )
    results: list[dict[str, Any] | None] = [None] * len(items)
    new: list[tuple[int, str, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    for index, (item, key) in enumerate(zip(items, keys, strict=True)):
        if key in existing:
            results[index] = {"index": index, "idempotency_key": key, "status": 200, "record": render(existing[key])}
            continue
        if key in seen:  # the same key twice in one batch is one entry: the later item answers the first one
            continue
        data = {name: value for name, value in item.items() if name != "idempotency_key"}
        try:
            cleaned = _clean(object_type, data, creating=True, known_references={"project_id": set(projects)})
            project = projects[str(cleaned["project_id"])]
            if project.data.get("status") != ErpProjectStatus.ACTIVE:
                raise HubConflictError(
                    f"Project {cleaned['project_id']} is {project.data.get('status')}; nothing can be posted to it."
                )
            services.erp_period_require_open(project=project, on_date=cleaned.get("date"), closed=closed_periods)
        except (HubValidationError, HubConflictError) as exc:
            results[index] = _batch_item_error(index, key, exc)
            continue
        _time_entry_amount(object_type, cleaned)
        seen[key] = index
        new.append((index, key, cleaned))
    # Every entry created by one call carries the call's batch id, so a test (or a person) sees what went together.
    batch = secrets.token_hex(8)
    created = services.records_create_many(
        system=SYSTEM, object_type=object_type, items=[(key, {**data, "batch": batch}) for _, key, data in new]
    )
    for (index, key, _), (record, was_created) in zip(new, created, strict=True):
        results[index] = {
            "index": index,
            "idempotency_key": key,
            "status": 201 if was_created else 200,
            "record": render(record),
        }
    for index, key in enumerate(keys):
        if results[index] is None:
            first = results[seen[key]] or {}
            results[index] = {**first, "index": index, "status": 200}
    return JsonResponse({"batch": batch, "results": results})
