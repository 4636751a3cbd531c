"""Views of the insights app outside the admin and the API: the Prometheus scrape endpoint, the trace page, the
hub's 403 page and its favicon."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.template import loader
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from insights import metrics
from insights.choices import PERM_VIEW_KPIS
from insights.trace import trace_lookup, trace_timeline
from integrationhub import scopes
from integrationhub.api import handlers
from integrationhub.authentication import client_ip, presented_key
from integrationhub.landing import role_landing_url
from integrationhub.roles import ROLES, role_grants
from integrationhub.scoping import entity_scope_for, request_entity_scope


def metrics_access_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scraper may read /metrics (its address is in HUB_METRICS_ALLOWED_NETWORKS, or it sends an
    API key with the kpis:read scope and all legal entities); else the 401/403 answer to send."""
    if metrics.address_allowed(client_ip(request)):
        return None
    key = presented_key(request)
    if key is None:
        response = HttpResponse(
            "Scrape /metrics from an address in HUB_METRICS_ALLOWED_NETWORKS, or send "
            "'Authorization: Api-Key <key>' with a key that has the kpis:read scope.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = "Api-Key"
        return response
    from integrationhub.apikeys import ApiKeyRefused, api_key_verify

    try:
        api_key = api_key_verify(key=key)
    except ApiKeyRefused as refused:
        return HttpResponse(f"{refused.detail}\n", status=401, content_type="text/plain")
    if scopes.KPIS_READ not in api_key.scopes:
        return HttpResponse(
            f"The API key {api_key.prefix}… lacks the scope {scopes.KPIS_READ}.\n",
            status=403,
            content_type="text/plain",
        )
    if not entity_scope_for(api_key.owner, api_key).all_entities:
        # The totals count every legal entity's work: a key of some entities reads its figures from /api/v1/kpis/.
        return HttpResponse(
            f"The API key {api_key.prefix}… is limited to some legal entities and /metrics counts them all; "
            "scrape with a key that has all entities, or read /api/v1/kpis/ for your entities' figures.\n",
            status=403,
            content_type="text/plain",
        )
    return None


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of the HTTP metrics and the hub's state."""
    refusal = metrics_access_refusal(request)
    if refusal is not None:
        return refusal
    body, content_type = metrics.metrics_exposition()
    return HttpResponse(body, content_type=content_type)


PERM_TRACE = "sync.view_message"


def trace_view(request: HttpRequest) -> HttpResponse:
    """GET ?q=<id>: the timeline of every correlation id the id belongs to (newest work first): type a
    correlation id or any external id and read what happened to that work, stage by stage."""
    if not request.user.has_perm(PERM_TRACE):
        raise PermissionDenied
    query = request.GET.get("q", "").strip()[:200]
    # Another legal entity's work is not found, the same as an id nobody knows.
    scope = request_entity_scope(request)
    correlation_ids = trace_lookup(query=query, scope=scope) if query else []
    traces = [
        {"correlation_id": cid, "entries": trace_timeline(correlation_id=cid, scope=scope)} for cid in correlation_ids
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Trace",
        "subtitle": None,
        "query": query,
        "traces": traces,
    }
    return TemplateResponse(request, "sync/trace.html", context)


# --- the 403 page and the favicon ---------------------------------------------------------------------------

# The hub's own pages and the permission each one checks (admin model pages are read from their URL name).
PAGE_PERMISSIONS = {
    "hub-trace": PERM_TRACE,
    "hub-change-history": "governance.view_ratecard",
    "admin:insights_kpidashboard_changelist": PERM_VIEW_KPIS,
    "admin:insights_kpidashboard_guide": PERM_VIEW_KPIS,
}
# The admin's URL name suffix of a model page, and the permission action it needs.
ADMIN_ACTIONS = {"changelist": "view", "change": "view", "history": "view", "add": "add", "delete": "delete"}


def _required_permission(request: HttpRequest) -> str | None:
    """The permission ("app_label.codename") the refused page checks, when the URL says it; else None."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    if match.view_name in PAGE_PERMISSIONS:
        return PAGE_PERMISSIONS[match.view_name]
    if match.namespace != "admin" or not match.url_name:
        return None
    for model in admin.site._registry:
        prefix = f"{model._meta.app_label}_{model._meta.model_name}_"
        action = ADMIN_ACTIONS.get(match.url_name.removeprefix(prefix))
        if match.url_name.startswith(prefix) and action:
            return f"{model._meta.app_label}.{action}_{model._meta.model_name}"
    return None


def _roles_holding(permission: str) -> list[str]:
    """The roles whose users hold `permission`, in the words the hub uses for them ("finance approver")."""
    app_label, _, codename = permission.partition(".")
    found = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    models = list(found.values_list("content_type__model", flat=True))
    return [
        role.replace("_", " ")
        for role in ROLES
        if any(role_grants(role=role, app_label=app_label, model=model, codename=codename) for model in models)
    ]


def permission_denied_view(request: HttpRequest, exception: Any) -> HttpResponse:
    """The hub's 403: under /api/ problem+json as before; elsewhere a page in the hub's look that says which
    permission (and which roles) the page needs, when known, and leads back to the user's landing page."""
    if request.path.startswith(handlers.API_PREFIX):
        return handlers.permission_denied(request, exception)
    user = getattr(request, "user", None)
    signed_in = bool(user is not None and user.is_authenticated)
    permission = _required_permission(request)
    reason = str(exception or "")
    context = {
        **(admin.site.each_context(request) if signed_in and getattr(user, "is_staff", False) else {}),
        "title": "You cannot open this page",
        "reason": "" if reason.startswith("<") else reason,
        "permission": permission,
        "roles": _roles_holding(permission) if permission else [],
        "landing_url": role_landing_url(user=user) if signed_in else reverse("admin:login"),
        "signed_in": signed_in,
    }
    body = loader.render_to_string("403.html", context, request=request)
    return HttpResponseForbidden(body)


def favicon_view(request: HttpRequest) -> HttpResponseRedirect:
    """/favicon.ico, which browsers ask for on their own: the hub's icon (an SVG served with the static files)."""
    return HttpResponseRedirect(static("favicon.svg"))
