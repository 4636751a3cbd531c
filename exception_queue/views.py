"""Pages of the exception queue inside the admin: an item's page, its actions, and bulk confirmation.

Thin: each view reads one selector or calls one action through the registry (`exception_queue.actions`), so
an action a workflow registers shows up here without a change. What a user may do comes from
`exception_item_actions_for`; a POST for anything else is refused with 403 and changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from exception_queue.actions import item_action_perform
from exception_queue.bulk import exception_items_bulk_perform
from exception_queue.choices import DecisionAction, ReplayMapping
from exception_queue.models import ExceptionItem
from exception_queue.selectors import exception_item_actions_for, exception_item_detail
from exception_queue.services import payload_diff
from integrationhub.errors import HubError
from integrationhub.scoping import records_in_scope, request_entity_scope


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _editable_payload(item: ExceptionItem) -> Any:
    """What "edit and replay" edits: the canonical payload once mapped, else the raw one (as the service does)."""
    message = item.message
    if message is None:
        return item.payload_snapshot
    return message.canonical_payload if message.canonical_payload is not None else message.raw_payload


def _context(request: HttpRequest, model_admin: Any, title: str, **extra: Any) -> dict[str, Any]:
    opts = model_admin.model._meta
    return {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "has_view_permission": True,
        **extra,
    }


def item_detail_view(
    request: HttpRequest, model_admin: Any, object_id: str, *, status: int = 200, **extra: Any
) -> HttpResponse:
    """The item page: payload, failed rules, trace timeline, related records, workflow run, decisions, actions."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        detail = exception_item_detail(item_id=int(object_id), scope=request_entity_scope(request))
    except ValueError:
        detail = None
    if detail is None:
        raise Http404("No such exception item.")
    item = detail.item
    actions = exception_item_actions_for(item=item, user=request.user)
    editable = _editable_payload(item)
    context = _context(
        request,
        model_admin,
        f"Exception item #{item.pk}: {item.get_category_display()}",
        detail=detail,
        item=item,
        original=item,
        actions=actions,
        action_names={a.action for a in actions},
        # One suggestion list per action input that has one: its text field offers them (see the template).
        input_choices=[
            {"id": f"choices-{a.action}-{name}", "action": a.action, "options": options}
            for a in actions
            for name, options in a.choices_for(item).items()
            if options
        ],
        payload_json=_pretty(item.payload_snapshot) if item.payload_snapshot is not None else "",
        editable_json=_pretty(editable) if editable is not None else "",
        mapping_choices=ReplayMapping.choices,
        action_url=reverse("admin:exception_queue_exceptionitem_act", args=[item.pk]),
        changelist_url=reverse("admin:exception_queue_exceptionitem_changelist"),
        **extra,
    )
    return TemplateResponse(request, "admin/exception_queue/exceptionitem/detail.html", context, status=status)


def item_action_view(request: HttpRequest, model_admin: Any, object_id: int) -> HttpResponse:
    """POST one action on one item. "Edit and replay" first shows the diff; it runs once the user confirms."""
    if request.method != "POST":
        return HttpResponseRedirect(reverse("admin:exception_queue_exceptionitem_change", args=[object_id]))
    item = (
        records_in_scope(ExceptionItem.objects.select_related("message"), request=request).filter(pk=object_id).first()
    )
    if item is None:  # missing, or another legal entity's: the same answer
        raise Http404("No such exception item.")
    action = request.POST.get("action", "")
    offered = {a.action: a for a in exception_item_actions_for(item=item, user=request.user)}
    if action not in offered:
        raise PermissionDenied(f"You cannot {action or 'act'} on this item.")
    reason = request.POST.get("reason", "")
    inputs: dict[str, Any] = {}
    for name in offered[action].inputs:
        if name == "payload":
            try:
                inputs["payload"] = json.loads(request.POST.get("payload", ""))
            except json.JSONDecodeError as error:
                messages.error(request, f"The payload is not valid JSON: {error.msg} (line {error.lineno}).")
                return item_detail_view(request, model_admin, str(item.pk), status=422)
            if action == DecisionAction.FIX_AND_REPLAY and request.POST.get("confirm") != "yes":
                return _fix_preview(request, model_admin, item, inputs["payload"], reason)
        elif request.POST.get(name):
            inputs[name] = request.POST[name]
    try:
        item_action_perform(item=item, action=action, user=request.user, reason=reason, **inputs)
    except HubError as error:
        messages.error(request, " ".join(part for part in (error.detail, error.hint) if part))
        return HttpResponseRedirect(reverse("admin:exception_queue_exceptionitem_change", args=[item.pk]))
    messages.success(request, f"{offered[action].label}: done on item #{item.pk}.")
    return HttpResponseRedirect(reverse("admin:exception_queue_exceptionitem_change", args=[item.pk]))


def _fix_preview(
    request: HttpRequest, model_admin: Any, item: ExceptionItem, payload: Any, reason: str
) -> HttpResponse:
    """The diff an edit makes, shown before it is submitted; the confirm form carries the same payload."""
    before = _editable_payload(item)
    diff = payload_diff(before, payload) if isinstance(payload, dict) else []
    context = _context(
        request,
        model_admin,
        f"Check the changes to item #{item.pk} before replaying",
        item=item,
        diff=diff,
        reason=reason,
        payload_text=json.dumps(payload, ensure_ascii=False),
        payload_is_object=isinstance(payload, dict),
        action_url=reverse("admin:exception_queue_exceptionitem_act", args=[item.pk]),
        item_url=reverse("admin:exception_queue_exceptionitem_change", args=[item.pk]),
    )
    return TemplateResponse(request, "admin/exception_queue/exceptionitem/fix_preview.html", context)


def bulk_action_view(
    request: HttpRequest, model_admin: Any, queryset: QuerySet[ExceptionItem], *, action: str
) -> HttpResponse | None:
    """The admin action: a confirmation page listing the items and asking a reason, then the bulk decision."""
    # The admin's queryset is already the user's scope; scoped again so a caller passing another cannot widen it.
    items = list(
        records_in_scope(queryset, request=request).select_related("system", "legal_entity").order_by("id")[:500]
    )
    if request.POST.get("confirm") == "yes":
        try:
            outcome = exception_items_bulk_perform(
                item_ids=[item.pk for item in items],
                action=action,
                user=request.user,
                reason=request.POST.get("reason", ""),
            )
        except HubError as error:
            messages.error(request, error.detail)
            return None
        messages.success(request, f"{action.capitalize()}: done on {len(outcome.done)} item(s).")
        for item_id, why in outcome.skipped.items():
            messages.warning(request, f"Item #{item_id} skipped: {why}.")
        return None
    context = _context(
        request,
        model_admin,
        f"{action.capitalize()} {len(items)} item(s)?",
        items=items,
        bulk_action=f"bulk_{action}",
        verb=action,
        action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
        select_across=request.POST.get("select_across", "0"),
    )
    return TemplateResponse(request, "admin/exception_queue/exceptionitem/bulk_confirm.html", context)
