"""Mapping sets, value maps and field rules in the admin, and the mapping editor's page and JSON endpoints."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from connectors.tests.factories import ConnectedSystemFactory
from mappings.models import CanonicalEntity, FieldRule, MappingSample, MappingSet, ValueMap, ValueMapEntry
from mappings.services import (
    canonical_entities_install,
    mapping_sample_save,
    mapping_set_create_draft,
    mapping_set_export,
    mapping_set_publish,
)
from mappings.tests.test_mapping_sets import SAMPLE, opportunity_mapping

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(db):
    canonical_entities_install()
    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    ValueMapEntry.objects.create(value_map=stage, source_value="Prospecting", target_value="prospecting")
    return ConnectedSystemFactory(slug="crm-test", name="CRM test")


@pytest.fixture
def published_and_draft(crm):
    """v1 published with a saved sample, v2 a draft copy of it."""
    v1 = opportunity_mapping(crm)
    mapping_sample_save(mapping_set=v1, name="closed won deal", payload=SAMPLE)
    mapping_set_publish(mapping_set=v1, confirm=True)
    return v1, mapping_set_create_draft(mapping_set=v1)


def editor_url(mapping_set, name=""):
    suffix = f"_{name}" if name else ""
    return reverse(f"admin:mappings_mappingset_editor{suffix}", args=[mapping_set.pk])


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def editor_rows(mapping_set):
    """The rules as the editor page sends them: JSON columns as text, one default box."""
    return [
        {
            "id": rule.pk,
            "target_path": rule.target_path,
            "source_paths": ", ".join(rule.source_paths),
            "steps": json.dumps(rule.steps) if rule.steps else "",
            "required": rule.required,
            "default": json.dumps(rule.default_value) if rule.has_default else "",
            "condition": "",
        }
        for rule in mapping_set.rules.all()
    ]


# --- mapping sets in the admin -------------------------------------------------------------------------


def test_analyst_creates_a_mapping_set_and_a_second_one_for_the_same_lineage_is_refused(crm, client_as):
    # given an analyst and the add form
    client = client_as("analyst")
    entity = CanonicalEntity.objects.get(name="opportunity")
    form = {
        "name": "CRM opportunity",
        "system": crm.pk,
        "entity": entity.pk,
        "direction": "inbound",
        "notes": "",
        "change_reason": "first CRM mapping",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
    }
    # when it is saved
    response = client.post(reverse("admin:mappings_mappingset_add"), form)
    # then version 1 is a draft with its lineage
    assert response.status_code == 302, response.content.decode()[:3000]
    mapping_set = MappingSet.objects.get()
    assert (mapping_set.version, mapping_set.status) == (1, "draft")
    assert mapping_set.lineage == f"{crm.pk}:{entity.pk}:inbound:-"
    created = mapping_set.history.get()
    assert (created.history_change_reason, created.history_user.username) == ("first CRM mapping", "analyst-user")
    # and a second mapping of the same system, entity and direction is refused with the reason
    again = client.post(reverse("admin:mappings_mappingset_add"), {**form, "name": "Duplicate"})
    assert again.status_code == 200
    assert "already exists" in again.content.decode()
    assert MappingSet.objects.count() == 1


def test_list_shows_version_status_editor_link_and_import(published_and_draft, client_as):
    v1, v2 = published_and_draft
    html = client_as("analyst").get(reverse("admin:mappings_mappingset_changelist")).content.decode()
    assert editor_url(v1) in html and editor_url(v2) in html
    assert "Import JSON" in html
    assert "Published" in html and "Draft" in html


def test_list_filters_and_search(published_and_draft, client_as):
    client = client_as("auditor")
    url = reverse("admin:mappings_mappingset_changelist")
    drafts = client.get(url, {"status__exact": "draft"}).context["cl"].result_list
    found = client.get(url, {"q": "crm-test"}).context["cl"].result_list
    assert [m.version for m in drafts] == [2]
    assert len(found) == 2


def test_a_published_set_is_read_only_and_offers_create_draft(published_and_draft, client_as):
    v1, _ = published_and_draft
    client = client_as("analyst")
    change_url = reverse("admin:mappings_mappingset_change", args=[v1.pk])
    html = client.get(change_url).content.decode()
    assert 'name="_save"' not in html
    assert "Create draft" in html
    forged = client.post(change_url, {"name": "renamed", "notes": "", "change_reason": "x"})
    assert forged.status_code == 403
    v1.refresh_from_db()
    assert v1.name == "CRM opportunity"


def test_create_draft_and_retire_actions(crm, client_as):
    # given a published v1
    v1 = opportunity_mapping(crm)
    mapping_set_publish(mapping_set=v1, confirm=True)
    client = client_as("analyst")
    changelist = reverse("admin:mappings_mappingset_changelist")
    # when "Create draft" runs on it
    response = client.post(changelist, {"action": "create_draft", "_selected_action": [v1.pk]}, follow=True)
    # then v2 is a draft with a copy of the rules, and the message links to its editor
    v2 = MappingSet.objects.get(version=2)
    assert v2.status == "draft" and v2.rules.count() == v1.rules.count()
    assert editor_url(v2) in response.content.decode()
    # when v1 is retired
    client.post(changelist, {"action": "retire", "_selected_action": [v1.pk]})
    assert MappingSet.objects.get(pk=v1.pk).status == "retired"


def test_bulk_delete_is_not_offered(published_and_draft, client_as):
    html = client_as("analyst").get(reverse("admin:mappings_mappingset_changelist")).content.decode()
    assert "delete_selected" not in html


def test_export_action_downloads_json_that_the_import_page_loads_as_a_new_draft(crm, client_as):
    # given a published set with a sample
    v1 = opportunity_mapping(crm)
    mapping_sample_save(mapping_set=v1, name="deal", payload=SAMPLE)
    mapping_set_publish(mapping_set=v1, confirm=True)
    client = client_as("analyst")
    # when it is exported from the list
    response = client.post(
        reverse("admin:mappings_mappingset_changelist"), {"action": "export_json", "_selected_action": [v1.pk]}
    )
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    exported = json.loads(response.content)
    assert exported["version"] == 1 and len(exported["rules"]) == 5
    # and uploaded on the import page
    upload = SimpleUploadedFile("export.json", response.content, content_type="application/json")
    imported = client.post(reverse("admin:mappings_mappingset_import"), {"file": upload, "text": ""})
    # then a v2 draft exists with the rules, and the browser lands in its editor
    v2 = MappingSet.objects.get(version=2)
    assert imported.status_code == 302 and imported["Location"] == editor_url(v2)
    assert v2.status == "draft" and v2.rules.count() == 5


def test_import_of_a_broken_export_lists_the_errors_and_stores_nothing(crm, client_as):
    v1 = opportunity_mapping(crm)
    exported = mapping_set_export(mapping_set=v1)
    mapping_set_publish(mapping_set=v1, confirm=True)
    exported["rules"][1]["steps"] = [{"transform": "shout"}]
    before = (MappingSet.objects.count(), FieldRule.objects.count())
    response = client_as("analyst").post(reverse("admin:mappings_mappingset_import"), {"text": json.dumps(exported)})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Rule 2 (name)" in html and "unknown transform" in html
    assert (MappingSet.objects.count(), FieldRule.objects.count()) == before


def test_import_of_a_misshapen_export_names_the_field_and_stores_nothing(crm, client_as):
    v1 = opportunity_mapping(crm)
    exported = mapping_set_export(mapping_set=v1)
    exported["rules"] = False
    before = (MappingSet.objects.count(), FieldRule.objects.count())
    response = client_as("analyst").post(reverse("admin:mappings_mappingset_import"), {"text": json.dumps(exported)})
    html = response.content.decode()
    assert response.status_code == 200
    assert "rules: Expected a list of items" in html, html
    assert (MappingSet.objects.count(), FieldRule.objects.count()) == before


def test_auditor_cannot_open_the_import_page(crm, client_as):
    assert client_as("auditor").get(reverse("admin:mappings_mappingset_import")).status_code == 403


# --- value maps and field rules ------------------------------------------------------------------------


def test_analyst_adds_a_value_map_with_entries(db, client_as):
    client = client_as("analyst")
    response = client.post(
        reverse("admin:mappings_valuemap_add"),
        {
            "name": "erp-status",
            "description": "",
            "unmapped": "pass_through",
            "default_value": "",
            "change_reason": "ERP statuses",
            "entries-TOTAL_FORMS": "2",
            "entries-INITIAL_FORMS": "0",
            "entries-0-source_value": "A",
            "entries-0-target_value": '"active"',
            "entries-1-source_value": "C",
            "entries-1-target_value": '"closed"',
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    value_map = ValueMap.objects.get(name="erp-status")
    assert {e.source_value: e.target_value for e in value_map.entries.all()} == {"A": "active", "C": "closed"}
    assert value_map.history.first().history_change_reason == "ERP statuses"
    changelist = reverse("admin:mappings_valuemap_changelist")
    by_entry = client.get(changelist, {"q": "C"}).context["cl"].result_list
    by_other = client.get(changelist, {"q": "nothing-like-it"}).context["cl"].result_list
    assert [m.name for m in by_entry] == ["erp-status"] and list(by_other) == []


def test_field_rule_admin_rejects_an_unknown_transform_naming_the_step(crm, client_as):
    mapping_set = opportunity_mapping(crm)
    response = client_as("analyst").post(
        reverse("admin:mappings_fieldrule_add"),
        {
            "mapping_set": mapping_set.pk,
            "position": "9",
            "target_path": "amount",
            "source_paths": '["Amount"]',
            "steps": '[{"transform": "trim"}, {"transform": "money"}]',
            "default_value": "null",
            "condition": "null",
            "notes": "",
            "change_reason": "amount",
        },
    )
    assert response.status_code == 200
    assert "Step 2: unknown transform &#x27;money&#x27;" in response.content.decode()
    assert not mapping_set.rules.filter(target_path="amount").exists()


# --- the mapping editor --------------------------------------------------------------------------------


def test_editor_page_shows_rules_samples_and_is_linked_from_the_change_page(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("analyst")
    change = client.get(reverse("admin:mappings_mappingset_change", args=[v2.pk])).content.decode()
    assert editor_url(v2) in change
    response = client.get(editor_url(v2))
    html = response.content.decode()
    assert response.status_code == 200
    config = response.context["editor_config"]
    assert config["canEdit"] is True
    assert [rule["target_path"] for rule in config["rules"]] == ["id", "name", "stage", "client.client_id", "currency"]
    assert config["samples"][0]["name"] == "closed won deal"
    assert 'id="save-rules"' in html and 'id="publish"' in html and "mappings/editor.js" in html


def test_auditor_sees_the_editor_read_only(published_and_draft, client_as):
    _, v2 = published_and_draft
    response = client_as("auditor").get(editor_url(v2))
    html = response.content.decode()
    assert response.status_code == 200
    assert response.context["editor_config"]["canEdit"] is False
    assert 'id="save-rules"' not in html and 'id="publish"' not in html and 'id="save-sample"' not in html


def test_a_published_version_opens_read_only_with_create_draft(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    html = client.get(editor_url(v1)).content.decode()
    assert 'id="save-rules"' not in html and 'id="create-draft"' in html
    response = client.post(editor_url(v1, "create_draft"))
    assert response.status_code == 302 and response["Location"] == editor_url(v2)  # the open draft


def test_preview_maps_the_sample_with_unsaved_rules_and_saves_nothing(published_and_draft, client_as):
    _, v2 = published_and_draft
    rows = editor_rows(v2)
    rows[1]["steps"] = '[{"transform": "upper"}]'
    history_before = FieldRule.history.count()
    response = post_json(client_as("analyst"), editor_url(v2, "preview"), {"payload": SAMPLE, "rules": rows})
    assert response.status_code == 200
    assert response.json()["output"]["name"] == "ATLAS"
    assert response.json()["errors"] == []
    assert v2.rules.get(target_path="name").steps == []
    assert FieldRule.history.count() == history_before


def test_preview_names_a_broken_row_and_still_maps_the_others(published_and_draft, client_as):
    _, v2 = published_and_draft
    rows = editor_rows(v2)
    rows[4]["steps"] = '[{"transform": "shout"}]'
    rows[1]["steps"] = "[{not json"
    body = post_json(client_as("analyst"), editor_url(v2, "preview"), {"payload": SAMPLE, "rules": rows}).json()
    by_row = {item["row"]: " ".join(item["messages"]) for item in body["rule_errors"]}
    assert "Step 1: unknown transform 'shout'" in by_row[4]
    assert "Steps is not valid JSON" in by_row[1]
    assert body["output"]["id"] == "006A" and "name" not in body["output"]


def test_preview_errors_name_target_source_and_value(published_and_draft, client_as):
    _, v2 = published_and_draft
    body = post_json(
        client_as("auditor"),
        editor_url(v2, "preview"),
        {"payload": {**SAMPLE, "StageName": "Lost somewhere"}, "rules": editor_rows(v2)},
    ).json()
    assert body["errors"][0] == {
        "target": "stage",
        "source": "StageName",
        "value": "Lost somewhere",
        "message": body["errors"][0]["message"],
    }


def test_save_rules_refuses_an_unknown_transform_naming_the_row_and_step_and_changes_nothing(
    published_and_draft, client_as
):
    _, v2 = published_and_draft
    rows = editor_rows(v2)
    rows[1]["steps"] = '[{"transform": "upper"}]'
    rows[4]["steps"] = '[{"transform": "upper"}, {"transform": "money"}]'
    response = post_json(client_as("analyst"), editor_url(v2, "rules"), {"rules": rows, "reason": "try"})
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert error["row"] == 4 and "Step 2: unknown transform 'money'" in error["message"]
    assert v2.rules.get(target_path="name").steps == []  # row 1 was rolled back too


def test_save_rules_updates_adds_and_deletes_with_the_reason_in_history(published_and_draft, client_as):
    _, v2 = published_and_draft
    rows = editor_rows(v2)
    rows[1]["steps"] = '[{"transform": "upper"}]'
    del rows[3]  # client.client_id
    rows.append({"target_path": "amount", "source_paths": "Amount", "steps": "", "required": False, "default": "0"})
    response = post_json(client_as("analyst"), editor_url(v2, "rules"), {"rules": rows, "reason": "JIRA-7 names"})
    assert response.status_code == 200, response.content
    targets = list(v2.rules.order_by("position").values_list("target_path", flat=True))
    assert targets == ["id", "name", "stage", "currency", "amount"]
    name = v2.rules.get(target_path="name")
    assert name.steps == [{"transform": "upper"}]
    assert name.history.first().history_change_reason == "JIRA-7 names"
    assert name.history.first().history_user.username == "analyst-user"
    amount = v2.rules.get(target_path="amount")
    assert amount.has_default and amount.default_value == 0


def test_save_rules_needs_a_reason(published_and_draft, client_as):
    _, v2 = published_and_draft
    response = post_json(client_as("analyst"), editor_url(v2, "rules"), {"rules": editor_rows(v2), "reason": " "})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "reason"


def test_save_rules_on_a_published_version_is_refused(published_and_draft, client_as):
    v1, _ = published_and_draft
    response = post_json(client_as("analyst"), editor_url(v1, "rules"), {"rules": [], "reason": "wipe"})
    assert response.status_code == 403
    assert v1.rules.count() == 5


def test_auditor_writes_through_the_editor_are_refused_and_change_nothing(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("auditor")
    rows = editor_rows(v2)
    rows[1]["steps"] = '[{"transform": "upper"}]'
    responses = [
        post_json(client, editor_url(v2, "rules"), {"rules": rows, "reason": "auditor"}),
        post_json(client, editor_url(v2, "sample"), {"name": "auditor sample", "payload": SAMPLE}),
        post_json(client, editor_url(v2, "publish"), {"confirm": True}),
        client.post(editor_url(v2, "create_draft")),
    ]
    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    v2.refresh_from_db()
    assert v2.status == "draft" and v2.rules.get(target_path="name").steps == []
    assert not MappingSample.objects.filter(name="auditor sample").exists()


def test_save_sample_stores_the_payload_for_the_lineage(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("analyst")
    response = post_json(client, editor_url(v2, "sample"), {"name": "prospect", "payload": {**SAMPLE, "Id": "006B"}})
    assert response.status_code == 200
    assert MappingSample.objects.get(lineage=v2.lineage, name="prospect").payload["Id"] == "006B"
    bad = post_json(client, editor_url(v2, "sample"), {"name": "list", "payload": [1]})
    assert bad.status_code == 422


def test_publish_from_the_editor_is_blocked_then_shows_the_diff_then_publishes(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    # given a draft whose currency rule breaks the saved sample
    rows = editor_rows(v2)
    rows[4]["steps"] = '[{"transform": "lower"}]'
    assert post_json(client, editor_url(v2, "rules"), {"rules": rows, "reason": "lower"}).status_code == 200
    # when publishing is asked for, it is refused naming the sample and the field
    blocked = post_json(client, editor_url(v2, "publish"), {"confirm": True})
    assert blocked.status_code == 422
    assert blocked.json()["errors"][0]["field"] == "samples.closed won deal.currency"
    # when the rules are fixed, the dry run shows the diff and publishes nothing
    rows = editor_rows(v2)
    rows[4]["steps"] = '[{"transform": "upper"}]'
    rows[1]["steps"] = '[{"transform": "upper"}]'
    assert post_json(client, editor_url(v2, "rules"), {"rules": rows, "reason": "fix"}).status_code == 200
    dry = post_json(client, editor_url(v2, "publish"), {"confirm": False}).json()
    assert dry["published"] is False and dry["previous_version"] == 1
    assert dry["outcomes"][0]["diff"] == [{"path": "name", "before": "Atlas", "after": "ATLAS"}]
    assert MappingSet.objects.get(pk=v2.pk).status == "draft"
    # and confirming publishes v2 and retires v1
    done = post_json(client, editor_url(v2, "publish"), {"confirm": True}).json()
    assert done["published"] is True and done["redirect"] == editor_url(v2)
    assert MappingSet.objects.get(pk=v2.pk).status == "published"
    assert MappingSet.objects.get(pk=v1.pk).status == "retired"


def test_editor_endpoints_need_post_and_json(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("analyst")
    assert client.get(editor_url(v2, "preview")).status_code == 405
    bad = client.post(editor_url(v2, "preview"), "{nope", content_type="application/json")
    assert bad.status_code == 400 and bad["Content-Type"] == "application/problem+json"


def test_editor_offers_recent_messages_of_the_system_and_entity_when_the_sync_engine_has_them(
    published_and_draft, client_as
):
    message_model = apps.get_model("sync", "Message")
    _, v2 = published_and_draft
    message_model.objects.create(
        system=v2.system,
        entity="opportunity",
        event_type="opportunity.updated",
        idempotency_key="evt-1",
        correlation_id="corr-1",
        raw_payload={**SAMPLE, "Name": "From the wire"},
    )
    message_model.objects.create(
        system=v2.system,
        entity="client",
        event_type="client.updated",
        idempotency_key="evt-2",
        correlation_id="corr-2",
        raw_payload={"Name": "Other entity"},
    )
    recent = client_as("analyst").get(editor_url(v2)).context["editor_config"]["messages"]
    assert [item["payload"]["Name"] for item in recent] == ["From the wire"]


def test_a_value_map_in_use_cannot_be_deleted_in_the_admin(published_and_draft, client_as):
    value_map = ValueMap.objects.get(name="sf-stage")
    client = client_as("analyst")
    html = client.get(reverse("admin:mappings_valuemap_change", args=[value_map.pk])).content.decode()
    assert "deletelink" not in html
    assert (
        client.post(reverse("admin:mappings_valuemap_delete", args=[value_map.pk]), {"post": "yes"}).status_code == 403
    )
    assert ValueMap.objects.filter(pk=value_map.pk).exists()
