"""The trace page: type a correlation id or any external id and read what happened to that work, stage by stage."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from sync.trace import trace_lookup, trace_timeline

PERM_TRACE = "sync.view_message"


def trace_view(request: HttpRequest) -> HttpResponse:
    """GET ?q=<id>: the timeline of every correlation id the id belongs to (newest work first)."""
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
