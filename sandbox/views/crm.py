"""The sandbox CRM in the shape of the Salesforce REST API (OAuth2 client credentials, SOQL, sObjects).

URLs are relative to `instance_url` (http://host/sandbox/crm), as in Salesforce: `nextRecordsUrl` and
`attributes.url` start with /services/data/..., so a client joins them to instance_url by concatenation
(httpx's base_url does exactly that).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from dateutil.parser import isoparse
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from sandbox import selectors, services
from sandbox.choices import SandboxSystem
from sandbox.faults import with_faults
from sandbox.models import SandboxRecord
from sandbox.salesforce import (
    READ_ONLY_FIELDS,
    REFERENCE_FIELDS,
    REQUIRED_FIELDS,
    SOBJECT_FIELDS,
    SYSTEM_FIELDS,
    is_field,
    sobject_render,
)
from sandbox.soql import SoqlError, SoqlQuery, soql_apply, soql_parse
from sandbox.views.common import BadRequestBody, bearer_token, json_body

SYSTEM = SandboxSystem.CRM
VERSION = re.compile(r"^v\d{2}\.0$")
QUERY_LOCATOR_TTL_SECONDS = 15 * 60  # Salesforce keeps a query cursor 15 minutes after its last use
MAX_BATCH_SIZE = 2000

# --- Salesforce's shapes ------------------------------------------------------------------------------


def errors(status: int, code: str, message: str, fields: list[str] | None = None) -> JsonResponse:
    """Salesforce's error body: a JSON list of {message, errorCode[, fields]}."""
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return JsonResponse([body], status=status, safe=False)


def not_found() -> JsonResponse:
    return errors(404, "NOT_FOUND", "The requested resource does not exist")


# --- auth ---------------------------------------------------------------------------------------------


@csrf_exempt
@with_faults(SYSTEM)
def token(request: HttpRequest) -> HttpResponse:
    """POST /services/oauth2/token: the client credentials flow."""
    if request.method != "POST":
        return JsonResponse({"error": "invalid_request", "error_description": "must use HTTP POST"}, status=400)
    grant_type = request.POST.get("grant_type", "")
    if grant_type != "client_credentials":
        return JsonResponse(
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, status=400
        )
    try:
        issued = services.access_token_issue(
            system=SYSTEM,
            client_id=request.POST.get("client_id", ""),
            client_secret=request.POST.get("client_secret", ""),
        )
    except services.SandboxAuthError as error:
        return JsonResponse({"error": error.error_code, "error_description": error.detail}, status=400)
    instance_url = request.build_absolute_uri("/sandbox/crm").rstrip("/")
    return JsonResponse(
        {
            "access_token": issued.token,
            "instance_url": instance_url,
            "id": f"{instance_url}/id/00D5g000004SANDBOX/0055g00000SANDBOX",
            "token_type": "Bearer",
            "issued_at": str(int(issued.issued_at.timestamp() * 1000)),
            "expires_in": int((issued.expires_at - issued.issued_at).total_seconds()),
            "signature": secrets.token_urlsafe(32),
        }
    )


def crm_auth(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Every data call needs a bearer token from the token endpoint; else Salesforce's 401 INVALID_SESSION_ID."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not selectors.access_token_is_valid(system=SYSTEM, token=bearer_token(request)):
            return errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        version = kwargs.get("version")
        if version is not None and not VERSION.match(version):
            return not_found()
        return view(request, *args, **kwargs)

    return csrf_exempt(with_faults(SYSTEM)(wrapped))


@crm_auth
def whoami(request: HttpRequest) -> HttpResponse:
    """GET /whoami: proves the base URL and the token; what a connector's health check should call."""
    return JsonResponse({"system": SYSTEM, "organization_id": "00D5g000004SANDBOX", "api_versions": ["v60.0"]})


# --- SOQL query ---------------------------------------------------------------------------------------


def _batch_size(request: HttpRequest) -> int:
    options = request.headers.get("Sforce-Query-Options", "")
    match = re.search(r"batchSize=(\d+)", options)
    default = services.sandbox_setting_ensure(system=SYSTEM).page_size
    return max(1, min(MAX_BATCH_SIZE, int(match.group(1)))) if match else default


def _check_query(query: SoqlQuery) -> None:
    if query.sobject not in SOBJECT_FIELDS:
        raise SoqlError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported.")
    for name in [*query.fields, *(c.field for c in query.conditions)]:
        if not is_field(query.sobject, name):
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{query.sobject}'.")


def _page(state: dict[str, Any], after: list[Any] | None, served: int, version: str) -> dict[str, Any]:
    """One page of a query; stores the cursor of the next page under the same locator."""
    query = soql_parse(state["soql"])
    order_column = query.order_column or "external_id"
    size = state["batch"] if query.limit is None else max(0, min(state["batch"], query.limit - served))
    qs = soql_apply(
        selectors.records(system=SYSTEM, object_type=query.sobject, include_deleted=state["all"]), query.conditions
    )
    position = None
    if after is not None:
        position = (isoparse(after[0]) if order_column.endswith("_at") else after[0], after[1])
    rows, more = selectors.keyset_page(qs, order_column=order_column, tiebreak="external_id", after=position, size=size)
    served += len(rows)
    if query.limit is not None and served >= query.limit:
        more = False
    body: dict[str, Any] = {
        "totalSize": state["total"],
        "done": not more,
        "records": [sobject_render(r, version=version, fields=query.fields) for r in rows],
    }
    if more:
        last = rows[-1]
        last_value = getattr(last, order_column)
        cursor = [last_value.isoformat() if isinstance(last_value, datetime) else last_value, last.external_id]
        cache.set(f"sandbox:crm:qloc:{state['locator']}-{served}", cursor, QUERY_LOCATOR_TTL_SECONDS)
        cache.touch(f"sandbox:crm:qloc:{state['locator']}", QUERY_LOCATOR_TTL_SECONDS)
        body["nextRecordsUrl"] = f"/services/data/{version}/query/{state['locator']}-{served}"
    return body


def _query(request: HttpRequest, version: str, include_deleted: bool) -> HttpResponse:
    text = request.GET.get("q", "")
    try:
        query = soql_parse(text)
        _check_query(query)
        qs = selectors.records(system=SYSTEM, object_type=query.sobject, include_deleted=include_deleted)
        total = soql_apply(qs, query.conditions).count()
    except SoqlError as error:
        return errors(400, error.code, error.message)
    if query.limit is not None:
        total = min(total, query.limit)
    locator = "01g5g" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(13))
    state = {"locator": locator, "soql": text, "batch": _batch_size(request), "total": total, "all": include_deleted}
    cache.set(f"sandbox:crm:qloc:{locator}", state, QUERY_LOCATOR_TTL_SECONDS)
    return JsonResponse(_page(state, None, 0, version))


@crm_auth
def query(request: HttpRequest, version: str) -> HttpResponse:
    """GET /services/data/vXX.X/query?q=SOQL: the first page; live records only."""
    return _query(request, version, include_deleted=False)


@crm_auth
def query_all(request: HttpRequest, version: str) -> HttpResponse:
    """GET /services/data/vXX.X/queryAll?q=SOQL: like query, with deleted records (IsDeleted = true)."""
    return _query(request, version, include_deleted=True)


@crm_auth
def query_more(request: HttpRequest, version: str, cursor: str) -> HttpResponse:
    """GET .../query/<locator>-<offset>: the next page. Asking for the same page twice returns the same page."""
    locator, _, offset = cursor.rpartition("-")
    state = cache.get(f"sandbox:crm:qloc:{locator}")
    after = cache.get(f"sandbox:crm:qloc:{locator}-{offset}")
    if state is None or after is None or not offset.isdigit():
        return errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return JsonResponse(_page(state, after, int(offset), version))


# --- sObjects -----------------------------------------------------------------------------------------


def _validate(sobject: str, data: dict[str, Any], *, creating: bool) -> JsonResponse | None:
    for name in data:
        if not is_field(sobject, name):
            return errors(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
        if name in READ_ONLY_FIELDS:
            return errors(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {name}. Please check the security settings of this field.",
                [name],
            )
    if creating:
        required = REQUIRED_FIELDS[sobject]  # type: ignore[index]  # a routed sObject name
        missing = [name for name in required if data.get(name) in (None, "")]
        if missing:
            return errors(
                400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
    for name, target in REFERENCE_FIELDS.items():
        value = data.get(name)
        known = selectors.record_get(system=SYSTEM, object_type=target, external_id=str(value)) if value else True
        if name in SOBJECT_FIELDS[sobject] and known is None:
            return errors(400, "INVALID_CROSS_REFERENCE_KEY", f"{name}: id value of incorrect type: {value}", [name])
    return None


def _body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        return json_body(request)
    except BadRequestBody as error:
        return errors(400, "JSON_PARSER_ERROR", str(error))


def _created(record: SandboxRecord, *, status: int = 201, created: bool | None = None) -> JsonResponse:
    body: dict[str, Any] = {"id": record.external_id, "success": True, "errors": []}
    if created is not None:
        body["created"] = created
    return JsonResponse(body, status=status)


@crm_auth
def sobject_collection(request: HttpRequest, version: str, sobject: str) -> HttpResponse:
    """POST .../sobjects/<Type>/ creates; GET describes the type briefly."""
    if sobject not in SOBJECT_FIELDS:
        return errors(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{sobject}'")
    if request.method == "GET":
        fields = [{"name": name} for name in ["Id", *SOBJECT_FIELDS[sobject], *SYSTEM_FIELDS[1:]]]
        return JsonResponse({"objectDescribe": {"name": sobject, "fields": fields}, "recentItems": []})
    if request.method != "POST":
        return errors(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are GET,POST")
    data = _body(request)
    if isinstance(data, JsonResponse):
        return data
    invalid = _validate(sobject, data, creating=True)
    if invalid:
        return invalid
    record, _ = services.crm_record_save(object_type=sobject, data=data)
    return _created(record)


@crm_auth
def sobject_detail(request: HttpRequest, version: str, sobject: str, record_id: str) -> HttpResponse:
    """GET, PATCH (204) or DELETE (204) one record by its Id."""
    if sobject not in SOBJECT_FIELDS:
        return not_found()
    record = selectors.record_get(system=SYSTEM, object_type=sobject, external_id=record_id)
    if record is None:
        return not_found()
    return _record_action(request, version, sobject, record)


def _record_action(request: HttpRequest, version: str, sobject: str, record: SandboxRecord) -> HttpResponse:
    if request.method == "GET":
        return JsonResponse(sobject_render(record, version=version))
    if request.method == "DELETE":
        services.record_delete(record=record)
        return HttpResponse(status=204)
    if request.method != "PATCH":
        return errors(
            405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are GET,PATCH,DELETE"
        )
    data = _body(request)
    if isinstance(data, JsonResponse):
        return data
    invalid = _validate(sobject, data, creating=False)
    if invalid:
        return invalid
    services.crm_record_save(object_type=sobject, record=record, data=data)
    return HttpResponse(status=204)


@crm_auth
def sobject_by_external_id(request: HttpRequest, version: str, sobject: str, field: str, value: str) -> HttpResponse:
    """.../sobjects/<Type>/<ExternalIdField>/<value>: GET, DELETE, or PATCH = upsert (201 created, 204 updated)."""
    if sobject not in SOBJECT_FIELDS:
        return not_found()
    if field != "Id" and not field.endswith("__c"):
        return errors(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {field}")
    lookup = "external_id" if field == "Id" else None
    if lookup:
        record = selectors.record_get(system=SYSTEM, object_type=sobject, external_id=value)
    else:
        record = selectors.record_by_field(system=SYSTEM, object_type=sobject, field=field, value=value)
    if request.method != "PATCH":
        if record is None:
            return not_found()
        return _record_action(request, version, sobject, record)
    data = _body(request)
    if isinstance(data, JsonResponse):
        return data
    data = {k: v for k, v in data.items() if k != field}  # the URL carries the external id's value
    invalid = _validate(sobject, data, creating=record is None)
    if invalid:
        return invalid
    if record is None:
        if field == "Id":
            return not_found()
        # The external id doubles as the idempotency key, so two racing upserts create one record.
        record, created = services.crm_record_save(
            object_type=sobject, data={**data, field: value}, idempotency_key=f"{field}:{value}"
        )
        if created:
            return _created(record, created=True)
    services.crm_record_save(object_type=sobject, record=record, data=data)
    return HttpResponse(status=204)
