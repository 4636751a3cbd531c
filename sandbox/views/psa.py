"""The sandbox PSA in the shape of Harvest API v2: bearer token + Harvest-Account-Id, page-number paging.

Extensions over Harvest, all additive: milestones (Harvest has none), approval on time entries
(approval_status, approved_at, POST time_entries/<id>/approve and /unapprove), cost_code and role on
time entries, roles on users, an `idempotency_key` list filter and the `Idempotency-Key` header on POST.
Lists are ordered by id, so page N stays page N while records change; `updated_since` is inclusive.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from sandbox import selectors, services
from sandbox.choices import ApprovalStatus, PsaObject, SandboxSystem
from sandbox.faults import with_faults
from sandbox.models import SandboxRecord
from sandbox.views.common import BadRequestBody, bearer_token, json_body

SYSTEM = SandboxSystem.PSA
MAX_PER_PAGE = 2000
TASKS = {1: "Consulting", 2: "Project Management", 3: "Design", 4: "Travel", 5: "Training"}
MILESTONE_STATUSES = ("open", "completed")


def harvest_datetime(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def message(status: int, text: str) -> JsonResponse:
    """Harvest's validation error shape."""
    return JsonResponse({"message": text}, status=status)


def not_found() -> JsonResponse:
    return JsonResponse({"status": 404, "error": "Not Found"}, status=404)


# --- resources: fields a client may write, required ones, and how a record is shown ---------------------

WRITABLE: dict[str, dict[str, type | tuple[type, ...]]] = {
    PsaObject.USER: {
        "first_name": str,
        "last_name": str,
        "email": str,
        "telephone": str,
        "timezone": str,
        "is_contractor": bool,
        "is_active": bool,
        "weekly_capacity": int,
        "default_hourly_rate": (int, float),
        "cost_rate": (int, float),
        "roles": list,
        "employee_id": str,
    },
    PsaObject.CLIENT: {"name": str, "is_active": bool, "address": str, "currency": str, "external_reference": str},
    PsaObject.PROJECT: {
        "client_id": int,
        "name": str,
        "code": str,
        "is_active": bool,
        "is_billable": bool,
        "bill_by": str,
        "budget": (int, float),
        "hourly_rate": (int, float),
        "fee": (int, float),
        "starts_on": str,
        "ends_on": str,
        "notes": str,
        "external_reference": str,
    },
    PsaObject.TIME_ENTRY: {
        "user_id": int,
        "project_id": int,
        "task_id": int,
        "spent_date": str,
        "hours": (int, float),
        "notes": str,
        "billable": bool,
        "cost_code": str,
        "role": str,
        "external_reference": str,
    },
    PsaObject.EXPENSE: {
        "user_id": int,
        "project_id": int,
        "spent_date": str,
        "total_cost": (int, float),
        "currency": str,
        "expense_category": str,
        "notes": str,
        "billable": bool,
        "receipt_url": str,
        "cost_code": str,
        "external_reference": str,
    },
    PsaObject.MILESTONE: {
        "project_id": int,
        "name": str,
        "due_date": str,
        "amount": (int, float),
        "currency": str,
        "status": str,
        "client_accepted": bool,
        "external_reference": str,
        # Written back by the hub's milestone billing flow: where the milestone stands in billing.
        "billing_status": str,
        "billing_reference": str,
    },
}
REQUIRED: dict[str, list[str]] = {
    PsaObject.USER: ["first_name", "last_name", "email"],
    PsaObject.CLIENT: ["name"],
    PsaObject.PROJECT: ["client_id", "name"],
    PsaObject.TIME_ENTRY: ["user_id", "project_id", "spent_date"],
    PsaObject.EXPENSE: ["user_id", "project_id", "spent_date", "total_cost"],
    PsaObject.MILESTONE: ["project_id", "name"],
}
DEFAULTS: dict[str, dict[str, Any]] = {
    PsaObject.USER: {"is_active": True, "is_contractor": False, "roles": [], "weekly_capacity": 126000},
    PsaObject.CLIENT: {"is_active": True, "currency": "USD"},
    PsaObject.PROJECT: {"is_active": True, "is_billable": True, "bill_by": "Project"},
    PsaObject.TIME_ENTRY: {"hours": 0.0, "billable": True, "task_id": 1, "approval_status": ApprovalStatus.UNSUBMITTED},
    PsaObject.MILESTONE: {"status": "open", "client_accepted": False, "currency": "USD"},
    PsaObject.EXPENSE: {"billable": True, "currency": "USD", "approval_status": ApprovalStatus.UNSUBMITTED},
}
APPROVABLE = (PsaObject.TIME_ENTRY, PsaObject.EXPENSE)
REFERENCES = {"user_id": PsaObject.USER, "project_id": PsaObject.PROJECT, "client_id": PsaObject.CLIENT}


# The records a list page refers to, loaded once for the page (see _references_load); empty otherwise.
_page_references: ContextVar[dict[tuple[str, str], SandboxRecord | None] | None] = ContextVar(
    "psa_page_references", default=None
)


def _get(object_type: str, record_id: Any) -> SandboxRecord | None:
    if record_id in (None, ""):
        return None
    loaded = _page_references.get()
    if loaded is not None and (object_type, str(record_id)) in loaded:
        return loaded[(object_type, str(record_id))]
    return selectors.record_get(system=SYSTEM, object_type=object_type, external_id=str(record_id))


def _references_load(rows: list[SandboxRecord]) -> dict[tuple[str, str], SandboxRecord | None]:
    """The users, projects and clients a page of records refers to, in three queries instead of several per row."""
    loaded: dict[tuple[str, str], SandboxRecord | None] = {}
    wanted = {
        PsaObject.USER: {
            str(row.data[name]) for row in rows for name in ("user_id", "approved_by_id") if row.data.get(name)
        },
        PsaObject.PROJECT: {str(row.data["project_id"]) for row in rows if row.data.get("project_id")},
        PsaObject.CLIENT: {str(row.data["client_id"]) for row in rows if row.data.get("client_id")},
    }
    for object_type in (PsaObject.USER, PsaObject.PROJECT, PsaObject.CLIENT):
        ids = wanted[object_type]
        if object_type == PsaObject.CLIENT:
            ids |= {
                str(record.data["client_id"])
                for (kind, _), record in loaded.items()
                if kind == PsaObject.PROJECT and record is not None and record.data.get("client_id")
            }
        found = {
            record.external_id: record
            for record in selectors.records(system=SYSTEM, object_type=object_type).filter(external_id__in=ids)
        }
        loaded.update({(object_type, external_id): found.get(external_id) for external_id in ids})
    return loaded


def _user_name(user: SandboxRecord | None) -> str | None:
    return f"{user.data.get('first_name', '')} {user.data.get('last_name', '')}".strip() if user else None


def _ref(record: SandboxRecord | None, **extra: Any) -> dict[str, Any] | None:
    if record is None:
        return None
    name = _user_name(record) if record.object_type == PsaObject.USER else record.data.get("name")
    return {"id": int(record.external_id), "name": name, **extra}


def render(record: SandboxRecord) -> dict[str, Any]:
    """A record as Harvest shows it: integer id, references expanded to {id, name}, timestamps in seconds."""
    data = dict(record.data)
    body: dict[str, Any] = {"id": int(record.external_id)}
    if record.object_type == PsaObject.PROJECT:
        client = _get(PsaObject.CLIENT, data.pop("client_id", None))
        body.update(data, client=_ref(client, currency=client.data.get("currency") if client else None))
    elif record.object_type == PsaObject.TIME_ENTRY:
        user = _get(PsaObject.USER, data.pop("user_id", None))
        project = _get(PsaObject.PROJECT, data.pop("project_id", None))
        client = _get(PsaObject.CLIENT, project.data.get("client_id")) if project else None
        task_id = data.pop("task_id", 1)
        approver = _get(PsaObject.USER, data.pop("approved_by_id", None))
        approved = data.get("approval_status") == ApprovalStatus.APPROVED
        hours = float(data.get("hours") or 0)
        body.update(
            spent_date=data.get("spent_date"),
            hours=hours,
            hours_without_timer=hours,
            rounded_hours=round(hours * 4) / 4,
            notes=data.get("notes"),
            is_locked=approved,
            locked_reason="Item Approved and Locked for this Time Period" if approved else None,
            is_closed=approved,
            is_billed=False,
            is_running=False,
            billable=data.get("billable", True),
            budgeted=True,
            billable_rate=(project.data.get("hourly_rate") if project else None)
            or (user.data.get("default_hourly_rate") if user else None),
            cost_rate=user.data.get("cost_rate") if user else None,
            user=_ref(user),
            client=_ref(client, currency=client.data.get("currency") if client else None),
            project=_ref(project, code=project.data.get("code") if project else None),
            task={"id": task_id, "name": TASKS.get(task_id)},
            approval_status=data.get("approval_status", ApprovalStatus.UNSUBMITTED),
            approved_at=harvest_datetime(data.get("approved_at")),
            approved_by=_ref(approver),
            cost_code=data.get("cost_code"),
            role=data.get("role"),
            external_reference=data.get("external_reference"),
        )
    elif record.object_type == PsaObject.EXPENSE:
        user = _get(PsaObject.USER, data.pop("user_id", None))
        project = _get(PsaObject.PROJECT, data.pop("project_id", None))
        client = _get(PsaObject.CLIENT, project.data.get("client_id")) if project else None
        approver = _get(PsaObject.USER, data.pop("approved_by_id", None))
        body.update(
            data,
            total_cost=float(data.get("total_cost") or 0),
            is_locked=data.get("approval_status") == ApprovalStatus.APPROVED,
            user=_ref(user),
            client=_ref(client, currency=client.data.get("currency") if client else None),
            project=_ref(project, code=project.data.get("code") if project else None),
            approval_status=data.get("approval_status", ApprovalStatus.UNSUBMITTED),
            approved_at=harvest_datetime(data.get("approved_at")),
            approved_by=_ref(approver),
        )
    elif record.object_type == PsaObject.MILESTONE:
        project = _get(PsaObject.PROJECT, data.pop("project_id", None))
        data["completed_at"] = harvest_datetime(data.get("completed_at"))
        body.update(data, project=_ref(project))
    else:
        body.update(data)
    body["created_at"] = harvest_datetime(record.created_at)
    body["updated_at"] = harvest_datetime(record.updated_at)
    return body


def _clean(object_type: str, data: dict[str, Any], *, creating: bool) -> dict[str, Any] | JsonResponse:
    fields = WRITABLE[object_type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        return message(422, f"Unknown parameter: {', '.join(unknown)}")
    for name, value in data.items():
        expected = fields[name]
        if value is not None and not (
            isinstance(value, expected) and not (isinstance(value, bool) and expected is int)
        ):
            return message(422, f"{name.replace('_', ' ').capitalize()} is invalid")
    if creating:
        missing = [name for name in REQUIRED[object_type] if data.get(name) in (None, "")]
        if missing:
            return message(422, f"{missing[0].replace('_id', '').replace('_', ' ').capitalize()} can't be blank")
    for name, target in REFERENCES.items():
        if name in data and name in fields and _get(target, data[name]) is None:
            return message(422, f"{name.replace('_id', '').capitalize()} is not valid")
    if "task_id" in data and data["task_id"] not in TASKS:
        return message(422, "Task is not valid")
    if object_type == PsaObject.MILESTONE and data.get("status", "open") not in MILESTONE_STATUSES:
        return message(422, f"Status must be one of {', '.join(MILESTONE_STATUSES)}")
    return {**(DEFAULTS[object_type] if creating else {}), **data}


# --- auth ---------------------------------------------------------------------------------------------


def psa_auth(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Harvest auth: `Authorization: Bearer <token>` and `Harvest-Account-Id: <account>`, else 401 invalid_token."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        setting = services.sandbox_setting_ensure(system=SYSTEM)
        if not services.static_token_is_valid(system=SYSTEM, token=bearer_token(request)):
            return JsonResponse(
                {
                    "error": "invalid_token",
                    "error_description": "The access token provided is expired, revoked, malformed or invalid "
                    "for other reasons.",
                },
                status=401,
            )
        account = request.headers.get("Harvest-Account-Id", "")
        if not account or not secrets.compare_digest(account, setting.account_id):
            return JsonResponse(
                {
                    "error": "invalid_token",
                    "error_description": "The Harvest-Account-Id header is missing or does not match the token.",
                },
                status=401,
            )
        return view(request, *args, **kwargs)

    return csrf_exempt(with_faults(SYSTEM)(wrapped))


ME = {"id": 1, "first_name": "Sandbox", "last_name": "Integration", "email": "integration@psa.sandbox.local"}


@psa_auth
def whoami(request: HttpRequest) -> HttpResponse:
    """GET /whoami and GET /v2/users/me: the token's user; what a connector's health check should call."""
    setting = services.sandbox_setting_ensure(system=SYSTEM)
    return JsonResponse({**ME, "is_active": True, "roles": ["Administrator"], "account_id": int(setting.account_id)})


@psa_auth
def company(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {"name": "Sandbox PSA", "is_active": True, "base_uri": request.build_absolute_uri("/sandbox/psa")}
    )


# --- lists and records --------------------------------------------------------------------------------

LIST_FILTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "is_active": ("is_active", lambda v: v.lower() == "true"),
    "client_id": ("client_id", int),
    "project_id": ("project_id", int),
    "user_id": ("user_id", int),
    "approval_status": ("approval_status", str),
    "status": ("status", str),
}


def _list(request: HttpRequest, object_type: str) -> HttpResponse:
    try:
        since = selectors.parse_since(request.GET.get("updated_since", ""))
        page = max(1, int(request.GET.get("page", "1")))
        default = services.sandbox_setting_ensure(system=SYSTEM).page_size
        per_page = max(1, min(MAX_PER_PAGE, int(request.GET.get("per_page", default))))
    except ValueError:
        return message(422, "Invalid parameter: updated_since, page or per_page")
    qs = selectors.records(system=SYSTEM, object_type=object_type)
    if since is not None:
        qs = qs.filter(updated_at__gte=since)
    for param, (field, convert) in LIST_FILTERS.items():
        filterable = field in WRITABLE[object_type] or (param == "approval_status" and object_type in APPROVABLE)
        if param in request.GET and filterable:
            try:
                qs = qs.filter(**{f"data__{field}": convert(request.GET[param])})
            except ValueError:
                return message(422, f"Invalid parameter: {param}")
    if object_type == PsaObject.TIME_ENTRY:
        if request.GET.get("from"):
            qs = qs.filter(data__spent_date__gte=request.GET["from"])
        if request.GET.get("to"):
            qs = qs.filter(data__spent_date__lte=request.GET["to"])
    if request.GET.get("idempotency_key"):
        qs = qs.filter(idempotency_key=request.GET["idempotency_key"])
    memo_key = selectors.list_memo_key(system=SYSTEM, object_type=object_type, params=request.GET)
    rows, total = selectors.number_page(qs, page=page, per_page=per_page, memo_key=memo_key)
    total_pages = max(1, -(-total // per_page))

    def link(number: int | None) -> str | None:
        if number is None:
            return None
        params = {**request.GET.dict(), "page": number, "per_page": per_page}
        return request.build_absolute_uri(f"{request.path}?{urlencode(params)}")

    next_page = page + 1 if page < total_pages else None
    previous_page = page - 1 if page > 1 else None
    token = _page_references.set(_references_load(rows))
    try:
        rendered = [render(row) for row in rows]
    finally:
        _page_references.reset(token)
    return JsonResponse(
        {
            object_type: rendered,
            "per_page": per_page,
            "total_pages": total_pages,
            "total_entries": total,
            "next_page": next_page,
            "previous_page": previous_page,
            "page": page,
            "links": {
                "first": link(1),
                "next": link(next_page),
                "previous": link(previous_page),
                "last": link(total_pages),
            },
        }
    )


def _create(request: HttpRequest, object_type: str) -> HttpResponse:
    try:
        raw = json_body(request)
    except BadRequestBody as error:
        return message(400, str(error))
    key = request.headers.get("Idempotency-Key", "")
    existing = selectors.record_by_idempotency_key(system=SYSTEM, object_type=object_type, key=key)
    if existing is not None:
        return JsonResponse(render(existing), status=200)
    data = _clean(object_type, raw, creating=True)
    if isinstance(data, JsonResponse):
        return data
    if object_type == PsaObject.TIME_ENTRY and not data.get("role"):
        user = _get(PsaObject.USER, data["user_id"])
        data["role"] = (user.data.get("roles") or [None])[0] if user else None
    record, created = services.record_create(system=SYSTEM, object_type=object_type, data=data, idempotency_key=key)
    return JsonResponse(render(record), status=201 if created else 200)


def _update(request: HttpRequest, record: SandboxRecord) -> HttpResponse:
    try:
        raw = json_body(request)
    except BadRequestBody as error:
        return message(400, str(error))
    if record.object_type in APPROVABLE and record.data.get("approval_status") == ApprovalStatus.APPROVED:
        return message(422, "This entry is approved and locked; unapprove it before changing it.")
    data = _clean(record.object_type, raw, creating=False)
    if isinstance(data, JsonResponse):
        return data
    if record.object_type == PsaObject.MILESTONE and data.get("status") != record.data.get("status"):
        data["completed_at"] = services.now_ms().isoformat() if data.get("status") == "completed" else None
    return JsonResponse(render(services.record_update(record=record, changes=data)))


def collection(object_type: str, *, writable: bool = True) -> Callable[[HttpRequest], HttpResponse]:
    @psa_auth
    def view(request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            return _list(request, object_type)
        if request.method == "POST" and writable:
            return _create(request, object_type)
        return message(405, "Method not allowed")

    return view


def detail(object_type: str) -> Callable[..., HttpResponse]:
    @psa_auth
    def view(request: HttpRequest, record_id: int) -> HttpResponse:
        record = _get(object_type, record_id)
        if record is None:
            return not_found()
        if request.method == "GET":
            return JsonResponse(render(record))
        if request.method == "PATCH":
            return _update(request, record)
        if request.method == "DELETE":
            if record.data.get("approval_status") == ApprovalStatus.APPROVED:
                return message(422, "This time entry is approved and locked; unapprove it before deleting it.")
            services.psa_entry_delete(record=record)
            return HttpResponse(status=200)
        return message(405, "Method not allowed")

    return view


def _approval(approve: bool, object_type: str = PsaObject.TIME_ENTRY) -> Callable[..., HttpResponse]:
    @psa_auth
    def view(request: HttpRequest, record_id: int) -> HttpResponse:
        if request.method != "POST":
            return message(405, "Method not allowed")
        try:
            approver = json_body(request).get("approver_id")
        except BadRequestBody as error:
            return message(400, str(error))
        if approver is not None and _get(PsaObject.USER, approver) is None:
            return message(422, "Approver is not valid")
        try:
            record = services.psa_time_entry_approve(
                external_id=str(record_id), approve=approve, approver_id=approver, object_type=object_type
            )
        except services.HubNotFoundError:
            return not_found()
        return JsonResponse(render(record))

    return view


time_entry_approve = _approval(True)
time_entry_unapprove = _approval(False)
expense_approve = _approval(True, PsaObject.EXPENSE)
expense_unapprove = _approval(False, PsaObject.EXPENSE)


@psa_auth
def project_release_staffing(request: HttpRequest, record_id: int) -> HttpResponse:
    """POST projects/<id>/release_staffing: the project's staffing requests go to resource managers."""
    if request.method != "POST":
        return message(405, "Method not allowed")
    try:
        record = services.psa_project_release_staffing(external_id=str(record_id))
    except services.HubNotFoundError:
        return not_found()
    except services.HubConflictError as error:
        return message(422, error.detail)
    return JsonResponse(render(record))
