"""Pages of the mapping editor (an admin page per mapping set), its JSON endpoints, and import/export.

Thin: each view checks the admin's permissions, parses the request, calls one service (or editor helper)
and renders the result. The admin wires them in MappingSetAdmin.get_urls, so every one of them needs a
staff login and is CSRF-protected like the rest of the admin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from integrationhub.errors import PROBLEM_CONTENT_TYPE, HubError, HubValidationError, problem
from mappings import editor, services
from mappings.choices import MappingStatus
from mappings.forms import MappingSetImportForm
from mappings.models import MappingSet, ValueMap
from mappings.services import (
    mapping_sample_save,
    mapping_set_create_draft,
    mapping_set_export,
    mapping_set_import,
    mapping_set_publish,
)

JsonView = Callable[..., HttpResponse]


def export_filename(mapping_set: MappingSet) -> str:
    system, entity = mapping_set.system.slug, mapping_set.entity.name
    return f"mapping-{system}-{entity}-{mapping_set.direction}-v{mapping_set.version}.json"


def json_download(data: Any, *, filename: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(data, indent=2, ensure_ascii=False, default=str), content_type="application/json"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _mapping_set(request: HttpRequest, object_id: str, model_admin: Any) -> MappingSet:
    mapping_set = model_admin.get_object(request, unquote(object_id))
    if mapping_set is None:
        raise Http404("No such mapping set.")
    if not model_admin.has_view_or_change_permission(request, mapping_set):
        raise PermissionDenied
    return mapping_set


def _problem(
    status: int, title: str, detail: str, code: str, errors: list[dict[str, Any]] | None = None
) -> JsonResponse:
    body = problem(status=status, title=title, detail=detail, code=code, errors=errors)
    return JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)


def _json_endpoint(view: JsonView) -> JsonView:
    """POST-only JSON endpoint: the body is parsed for the view; hub errors and refusals leave as problem+json."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            body = json.loads(request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _problem(400, "Not JSON", f"The request body is not valid JSON: {exc}", "parse_error")
        if not isinstance(body, dict):
            return _problem(400, "Not JSON", "The request body must be a JSON object.", "parse_error")
        try:
            return view(request, *args, body=body, **kwargs)
        except PermissionDenied:
            return _problem(403, "Forbidden", "You may not change this mapping set.", "permission_denied")
        except HubError as exc:
            response = _problem(exc.status, exc.title, exc.detail, exc.code, exc.errors)
            return response

    return wrapped


def _can_save_samples(request: HttpRequest) -> bool:
    user = request.user
    return user.has_perm("mappings.add_mappingsample") and user.has_perm("mappings.change_mappingsample")


def _require_edit(request: HttpRequest, mapping_set: MappingSet, model_admin: Any) -> None:
    if not model_admin.can_edit(request, mapping_set):
        raise PermissionDenied


# --- the editor page ----------------------------------------------------------------------------------


def mapping_editor(request: HttpRequest, object_id: str, *, model_admin: Any) -> HttpResponse:
    """Left: a sample payload; middle: the rules table; right: the live output and the validation errors."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    can_edit = model_admin.can_edit(request, mapping_set)
    samples = editor.editor_samples(mapping_set)
    recent = editor.editor_recent_messages(mapping_set)
    urls = {
        name: reverse(f"admin:mappings_mappingset_editor_{name}", args=[mapping_set.pk])
        for name in ("preview", "rules", "sample", "publish", "create_draft")
    }
    config = {
        "mappingSet": {"id": mapping_set.pk, "version": mapping_set.version, "status": mapping_set.status},
        "urls": urls,
        "canEdit": can_edit,
        "canSaveSample": _can_save_samples(request),
        "rules": [editor.rule_as_row(rule) for rule in mapping_set.rules.all()],
        "samples": samples,
        "messages": recent,
        "transforms": editor.transform_catalogue(),
        "valueMaps": list(ValueMap.objects.values_list("name", flat=True)),
        "targets": editor.canonical_target_fields(mapping_set),
        "inherited": [rule.target_path for rule in editor.inherited_rules(mapping_set)],
    }
    opts = MappingSet._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"Mapping editor: {mapping_set}",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "mapping_set": mapping_set,
        "original": mapping_set,
        "can_edit": can_edit,
        "can_create_draft": mapping_set.status != MappingStatus.DRAFT and model_admin.has_change_permission(request),
        "inherited": editor.inherited_rows(mapping_set),
        "overridden": {rule.target_path for rule in mapping_set.rules.all()},
        "samples": samples,
        "recent_messages": recent,
        "initial_payload": json.dumps(samples[0]["payload"] if samples else {}, indent=2, ensure_ascii=False),
        "initial_sample_name": samples[0]["name"] if samples else "",
        "editor_config": config,
        "change_url": reverse("admin:mappings_mappingset_change", args=[mapping_set.pk]),
        "changelist_url": reverse("admin:mappings_mappingset_changelist"),
    }
    return render(request, "mappings/editor.html", context)


@_json_endpoint
def mapping_editor_preview(request: HttpRequest, object_id: str, *, model_admin: Any, body: dict) -> JsonResponse:
    """Map the posted sample with the posted (unsaved) rules; saved rules when no rules are posted."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    if "rules" in body:
        result = editor.mapping_preview_rules(mapping_set=mapping_set, rules=body["rules"], payload=body.get("payload"))
    else:
        result = editor.mapping_preview_rules(
            mapping_set=mapping_set,
            rules=[editor.rule_as_row(rule) for rule in mapping_set.rules.all()],
            payload=body.get("payload"),
        )
    return JsonResponse(result, json_dumps_params={"default": str})


@_json_endpoint
def mapping_editor_rules_save(request: HttpRequest, object_id: str, *, model_admin: Any, body: dict) -> JsonResponse:
    """Save the whole rules table of a draft (all or nothing); errors name the row and the step."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    _require_edit(request, mapping_set, model_admin)
    saved = services.mapping_rules_save(
        mapping_set=mapping_set, rules=body.get("rules"), user=request.user, reason=str(body.get("reason") or "")
    )
    return JsonResponse({"rules": [editor.rule_as_row(rule) for rule in saved], "saved": len(saved)})


@_json_endpoint
def mapping_editor_sample_save(request: HttpRequest, object_id: str, *, model_admin: Any, body: dict) -> JsonResponse:
    """Store the current payload as a named sample of the lineage; the publish gate replays it."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    if not _can_save_samples(request):
        raise PermissionDenied
    name = str(body.get("name") or "").strip()[:200]
    if not name:
        raise HubValidationError("Name the sample.", errors=[{"field": "name", "message": "This field is required."}])
    sample = mapping_sample_save(mapping_set=mapping_set, name=name, payload=body.get("payload"), user=request.user)
    return JsonResponse({"id": sample.pk, "name": sample.name, "payload": sample.payload})


@_json_endpoint
def mapping_editor_publish(request: HttpRequest, object_id: str, *, model_admin: Any, body: dict) -> JsonResponse:
    """{"confirm": false} answers the regression report; {"confirm": true} publishes when the gate passes."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    _require_edit(request, mapping_set, model_admin)
    confirm = body.get("confirm") is True
    report = mapping_set_publish(
        mapping_set=mapping_set,
        user=request.user,
        confirm=confirm,
        no_sample_reason=str(body.get("no_sample_reason") or ""),
    )
    data = editor.publish_report_as_dict(report)
    if report.published:
        messages.success(request, f"Published {mapping_set.name} v{mapping_set.version}.")
        data["redirect"] = reverse("admin:mappings_mappingset_editor", args=[mapping_set.pk])
    return JsonResponse(data, json_dumps_params={"default": str})


def mapping_editor_create_draft(request: HttpRequest, object_id: str, *, model_admin: Any) -> HttpResponse:
    """POST: the next draft version of this set (or the lineage's open draft), then its editor."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    mapping_set = _mapping_set(request, object_id, model_admin)
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    draft = mapping_set_create_draft(mapping_set=mapping_set, user=request.user)
    messages.success(request, f"Editing draft {draft}.")
    return HttpResponseRedirect(reverse("admin:mappings_mappingset_editor", args=[draft.pk]))


# --- import and export ----------------------------------------------------------------------------------


def mapping_set_export_view(request: HttpRequest, object_id: str, *, model_admin: Any) -> HttpResponse:
    """The set as a JSON download (rules, value maps used, samples) to import in another environment."""
    mapping_set = _mapping_set(request, object_id, model_admin)
    return json_download(mapping_set_export(mapping_set=mapping_set), filename=export_filename(mapping_set))


def mapping_set_import_view(request: HttpRequest, *, model_admin: Any) -> HttpResponse:
    """Upload an export: each set becomes a new draft here; all or nothing."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    form = MappingSetImportForm(request.POST or None, request.FILES or None)
    problems: list[dict[str, Any]] = []
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                drafts = [mapping_set_import(data=data, user=request.user) for data in form.cleaned_data["exports"]]
        except HubError as exc:
            form.add_error(None, exc.detail)
            problems = exc.errors
        else:
            for draft in drafts:
                messages.success(request, f"Imported {draft}.")
            target = (
                reverse("admin:mappings_mappingset_editor", args=[drafts[0].pk])
                if len(drafts) == 1
                else reverse("admin:mappings_mappingset_changelist")
            )
            return HttpResponseRedirect(target)
    opts = MappingSet._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Import mapping sets",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "form": form,
        "problems": problems,
        "changelist_url": reverse("admin:mappings_mappingset_changelist"),
    }
    return render(request, "mappings/admin/mappingset_import.html", context)
