"""The sandbox collaboration suite in the shape of Microsoft Graph v1.0: groups (team workspaces), members, users.

Auth: `Authorization: Bearer <token>`, either the sandbox's static token or one issued by
POST /sandbox/collab/oauth2/v2.0/token (client credentials, like the Microsoft identity platform).
Every Unified group is team-enabled: POST teams/<id>/archive and /unarchive answer 202 as Graph does.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from sandbox import selectors, services
from sandbox.choices import CollabObject, SandboxSystem
from sandbox.faults import with_faults
from sandbox.models import SandboxRecord
from sandbox.views.common import BadRequestBody, bearer_token, json_body

SYSTEM = SandboxSystem.COLLAB
DOMAIN = "sandbox.onmicrosoft.com"
MAX_TOP = 999
FILTER = re.compile(r"^\s*(?P<field>\w+)\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*$")
FILTERABLE = {
    CollabObject.GROUP: {"mailNickname", "displayName", "mail", "id"},
    CollabObject.USER: {"mail", "userPrincipalName", "displayName", "id"},
}
GROUP_WRITABLE = {
    "displayName",
    "mailNickname",
    "description",
    "mailEnabled",
    "securityEnabled",
    "groupTypes",
    "visibility",
}
# The tenant's group naming policy (Entra ID "custom blocked words"): a new group may not use these words.
NAMING_POLICY_BLOCKED_WORDS = ("confidential", "payroll")
GROUP_PATCHABLE = {"displayName", "description", "visibility"}
USER_WRITABLE = {"displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle", "accountEnabled"}


def graph_error(status: int, code: str, text: str) -> JsonResponse:
    """Graph's error body: {"error": {"code", "message", "innerError"}}."""
    inner = {"date": timezone.now().strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4())}
    return JsonResponse({"error": {"code": code, "message": text, "innerError": inner}}, status=status)


def not_found(record_id: str) -> JsonResponse:
    return graph_error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{record_id}' does not exist or one of its queried reference-property objects are not present.",
    )


def graph_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def context(request: HttpRequest, entity_set: str) -> str:
    return request.build_absolute_uri(f"/sandbox/collab/v1.0/$metadata#{entity_set}")


def render(record: SandboxRecord) -> dict[str, Any]:
    data = {k: v for k, v in record.data.items() if k != "members"}
    body: dict[str, Any] = {"id": record.external_id, **data}
    if record.object_type == CollabObject.GROUP:
        body["createdDateTime"] = graph_datetime(record.created_at)
        body["renewedDateTime"] = graph_datetime(record.updated_at)
    return body


# --- auth ---------------------------------------------------------------------------------------------


@csrf_exempt
@with_faults(SYSTEM)
def token(request: HttpRequest, tenant: str = "") -> HttpResponse:
    """POST /oauth2/v2.0/token (client credentials) as the Microsoft identity platform answers it."""
    if request.method != "POST":
        return JsonResponse(
            {"error": "invalid_request", "error_description": "AADSTS900561: POST required."}, status=400
        )
    if request.POST.get("grant_type") != "client_credentials":
        return JsonResponse(
            {"error": "unsupported_grant_type", "error_description": "AADSTS70003: The grant type is not supported."},
            status=400,
        )
    client_id = request.POST.get("client_id", "")
    try:
        issued = services.access_token_issue(
            system=SYSTEM, client_id=client_id, client_secret=request.POST.get("client_secret", "")
        )
    except services.SandboxAuthError as error:
        if error.error_code == "invalid_client_id":
            return JsonResponse(
                {
                    "error": "unauthorized_client",
                    "error_description": f"AADSTS700016: Application with identifier '{client_id}' was not found.",
                },
                status=400,
            )
        return JsonResponse(
            {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."},
            status=401,
        )
    expires_in = int((issued.expires_at - issued.issued_at).total_seconds())
    return JsonResponse(
        {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in, "access_token": issued.token}
    )


def graph_auth(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        supplied = bearer_token(request)
        if not supplied:
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        if not services.static_token_is_valid(system=SYSTEM, token=supplied):
            return graph_error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
        return view(request, *args, **kwargs)

    return csrf_exempt(with_faults(SYSTEM)(wrapped))


@graph_auth
def whoami(request: HttpRequest) -> HttpResponse:
    """GET /whoami and GET /v1.0/organization: the tenant; what a connector's health check should call."""
    return JsonResponse(
        {
            "@odata.context": context(request, "organization"),
            "value": [{"id": "5a5d0000-0000-4000-8000-000000000001", "displayName": "Sandbox Collaboration"}],
        }
    )


# --- collections --------------------------------------------------------------------------------------


def _list(request: HttpRequest, object_type: str) -> HttpResponse:
    qs = selectors.records(system=SYSTEM, object_type=object_type)
    expression = request.GET.get("$filter", "")
    if expression:
        match = FILTER.match(expression)
        if not match or match["field"] not in FILTERABLE[object_type]:  # type: ignore[index]  # a routed type
            return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.")
        value = match["value"].replace("''", "'")
        if match["field"] == "id":
            qs = qs.filter(external_id=value)
        else:
            qs = qs.filter(**{f"data__{match['field']}__iexact": value})
    try:
        top = max(1, min(MAX_TOP, int(request.GET.get("$top", "100"))))
        after = int(request.GET["$skiptoken"]) if request.GET.get("$skiptoken") else None
    except ValueError:
        return graph_error(400, "Request_BadRequest", "Invalid $top or $skiptoken.")
    rows, more = selectors.keyset_page(
        qs, order_column="id", tiebreak="id", after=(after, after) if after else None, size=top
    )
    body: dict[str, Any] = {"@odata.context": context(request, object_type), "value": [render(r) for r in rows]}
    if more:
        params = {**request.GET.dict(), "$skiptoken": rows[-1].pk}
        body["@odata.nextLink"] = request.build_absolute_uri(f"{request.path}?{urlencode(params)}")
    return JsonResponse(body)


def _create_group(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    unknown = sorted(set(data) - GROUP_WRITABLE)
    if unknown:
        return graph_error(
            400, "Request_BadRequest", f"Property '{unknown[0]}' does not exist on type 'microsoft.graph.group'."
        )
    missing = [name for name in ("displayName", "mailNickname") if not data.get(name)]
    if missing:
        return graph_error(
            400, "Request_BadRequest", f"Invalid value specified for property '{missing[0]}' of resource 'Group'."
        )
    blocked = [word for word in NAMING_POLICY_BLOCKED_WORDS if re.search(rf"\b{word}\b", data["displayName"], re.I)]
    if blocked:
        return graph_error(
            400, "Request_BadRequest", f"The display name contains '{blocked[0]}', a blocked word of the naming policy."
        )
    nickname = data["mailNickname"]
    if (
        selectors.records(system=SYSTEM, object_type=CollabObject.GROUP)
        .filter(data__mailNickname__iexact=nickname)
        .exists()
    ):
        return graph_error(
            400, "Request_BadRequest", "Another object with the same value for property mailNickname already exists."
        )
    group = {
        "description": None,
        "mailEnabled": True,
        "securityEnabled": False,
        "groupTypes": ["Unified"],
        "visibility": "Private",
        **data,
        "mail": f"{nickname}@{DOMAIN}",
        "isArchived": False,
        "members": [],
    }
    # The nickname is unique per tenant, so it doubles as the idempotency key against racing creates.
    record, created = services.record_create(
        system=SYSTEM, object_type=CollabObject.GROUP, data=group, idempotency_key=f"mailNickname:{nickname.lower()}"
    )
    if not created:
        return graph_error(
            400, "Request_BadRequest", "Another object with the same value for property mailNickname already exists."
        )
    return JsonResponse({"@odata.context": context(request, "groups/$entity"), **render(record)}, status=201)


def _create_user(request: HttpRequest, data: dict[str, Any]) -> HttpResponse:
    unknown = sorted(set(data) - USER_WRITABLE)
    if unknown:
        return graph_error(
            400, "Request_BadRequest", f"Property '{unknown[0]}' does not exist on type 'microsoft.graph.user'."
        )
    if not data.get("displayName") or not data.get("userPrincipalName"):
        return graph_error(400, "Request_BadRequest", "Invalid value specified for property 'userPrincipalName'.")
    key = f"upn:{data['userPrincipalName'].lower()}"
    record, created = services.record_create(
        system=SYSTEM, object_type=CollabObject.USER, data={"accountEnabled": True, **data}, idempotency_key=key
    )
    if not created:
        return graph_error(
            400,
            "Request_BadRequest",
            "Another object with the same value for property userPrincipalName already exists.",
        )
    return JsonResponse({"@odata.context": context(request, "users/$entity"), **render(record)}, status=201)


def collection(object_type: str) -> Callable[[HttpRequest], HttpResponse]:
    @graph_auth
    def view(request: HttpRequest) -> HttpResponse:
        if request.method == "GET":
            return _list(request, object_type)
        if request.method != "POST":
            return graph_error(405, "Request_BadRequest", "Method not allowed.")
        try:
            data = json_body(request)
        except BadRequestBody as error:
            return graph_error(400, "BadRequest", str(error))
        return _create_group(request, data) if object_type == CollabObject.GROUP else _create_user(request, data)

    return view


def _get(object_type: str, record_id: str) -> SandboxRecord | None:
    return selectors.record_get(system=SYSTEM, object_type=object_type, external_id=record_id)


@graph_auth
def group_detail(request: HttpRequest, group_id: str) -> HttpResponse:
    """GET, PATCH (204) or DELETE (204) one group."""
    group = _get(CollabObject.GROUP, group_id)
    if group is None:
        return not_found(group_id)
    if request.method == "GET":
        return JsonResponse({"@odata.context": context(request, "groups/$entity"), **render(group)})
    if request.method == "DELETE":
        services.record_delete(record=group)
        return HttpResponse(status=204)
    if request.method != "PATCH":
        return graph_error(405, "Request_BadRequest", "Method not allowed.")
    try:
        data = json_body(request)
    except BadRequestBody as error:
        return graph_error(400, "BadRequest", str(error))
    unknown = sorted(set(data) - GROUP_PATCHABLE)
    if unknown:
        return graph_error(400, "Request_BadRequest", f"Property '{unknown[0]}' cannot be updated.")
    services.record_update(record=group, changes=data)
    return HttpResponse(status=204)


@graph_auth
def user_detail(request: HttpRequest, user_id: str) -> HttpResponse:
    user = _get(CollabObject.USER, user_id)
    if user is None:
        user = selectors.record_by_field(
            system=SYSTEM, object_type=CollabObject.USER, field="userPrincipalName", value=user_id
        )
    if user is None:
        return not_found(user_id)
    return JsonResponse({"@odata.context": context(request, "users/$entity"), **render(user)})


@graph_auth
def group_members(request: HttpRequest, group_id: str) -> HttpResponse:
    """GET groups/<id>/members: the member users."""
    group = _get(CollabObject.GROUP, group_id)
    if group is None:
        return not_found(group_id)
    users = selectors.records(system=SYSTEM, object_type=CollabObject.USER).filter(
        external_id__in=group.data.get("members", [])
    )
    value = [{"@odata.type": "#microsoft.graph.user", **render(u)} for u in users.order_by("id")]
    return JsonResponse({"@odata.context": context(request, "directoryObjects"), "value": value})


@graph_auth
def group_members_ref(request: HttpRequest, group_id: str) -> HttpResponse:
    """POST groups/<id>/members/$ref {"@odata.id": ".../directoryObjects/<id>" or ".../users/<id>"}: 204."""
    group = _get(CollabObject.GROUP, group_id)
    if group is None:
        return not_found(group_id)
    if request.method != "POST":
        return graph_error(405, "Request_BadRequest", "Method not allowed.")
    try:
        reference = str(json_body(request).get("@odata.id", ""))
    except BadRequestBody as error:
        return graph_error(400, "BadRequest", str(error))
    match = re.search(r"/(?:users|directoryObjects)/([^/?]+)$", reference)
    if not match:
        return graph_error(400, "Request_BadRequest", "Invalid URL format specified in @odata.id.")
    user = _get(CollabObject.USER, match.group(1))
    if user is None:
        return not_found(match.group(1))
    members = list(group.data.get("members", []))
    if user.external_id in members:
        return graph_error(
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: 'members'.",
        )
    services.record_update(record=group, changes={"members": [*members, user.external_id]})
    return HttpResponse(status=204)


@graph_auth
def group_member_remove(request: HttpRequest, group_id: str, user_id: str) -> HttpResponse:
    """DELETE groups/<id>/members/<user id>/$ref: 204."""
    group = _get(CollabObject.GROUP, group_id)
    if group is None or request.method != "DELETE":
        return not_found(group_id)
    members = list(group.data.get("members", []))
    if user_id not in members:
        return not_found(user_id)
    services.record_update(record=group, changes={"members": [m for m in members if m != user_id]})
    return HttpResponse(status=204)


@graph_auth
def team_detail(request: HttpRequest, team_id: str) -> HttpResponse:
    group = _get(CollabObject.GROUP, team_id)
    if group is None:
        return not_found(team_id)
    return JsonResponse(
        {
            "@odata.context": context(request, "teams/$entity"),
            "id": group.external_id,
            "displayName": group.data.get("displayName"),
            "description": group.data.get("description"),
            "isArchived": group.data.get("isArchived", False),
            "webUrl": f"https://teams.sandbox.local/l/team/{group.external_id}",
        }
    )


def _archive(archived: bool) -> Callable[..., HttpResponse]:
    @graph_auth
    def view(request: HttpRequest, team_id: str) -> HttpResponse:
        group = _get(CollabObject.GROUP, team_id)
        if group is None:
            return not_found(team_id)
        if request.method != "POST":
            return graph_error(405, "Request_BadRequest", "Method not allowed.")
        services.record_update(record=group, changes={"isArchived": archived})
        response = HttpResponse(status=202)
        response["Location"] = f"/teams('{team_id}')/operations('{uuid.uuid4()}')"
        return response

    return view


team_archive = _archive(True)
team_unarchive = _archive(False)
