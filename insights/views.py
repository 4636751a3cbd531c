"""Views of the insights app outside the admin and the API: the Prometheus scrape endpoint and the trace page."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from insights import metrics
from insights.trace import trace_lookup, trace_timeline
from integrationhub import scopes
from integrationhub.authentication import client_ip, presented_key


def metrics_access_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scraper may read /metrics (its address is in HUB_METRICS_ALLOWED_NETWORKS, or it sends an
    API key with the kpis:read scope); else the 401/403 answer to send."""
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
    correlation_ids = trace_lookup(query=query) if query else []
    traces = [{"correlation_id": cid, "entries": trace_timeline(correlation_id=cid)} for cid in correlation_ids]
    context = {
        **admin.site.each_context(request),
        "title": "Trace",
        "subtitle": None,
        "query": query,
        "traces": traces,
    }
    return TemplateResponse(request, "sync/trace.html", context)
