"""The mapping API: mapping sets with preview, the publish gate, export/import, drafts; field rules; value maps."""

from __future__ import annotations

import pytest

from connectors.tests.factories import ConnectedSystemFactory
from mappings.models import FieldRule, MappingSample, MappingSet, ValueMap, ValueMapEntry
from mappings.services import (
    canonical_entities_install,
    mapping_sample_save,
    mapping_set_create_draft,
    mapping_set_publish,
)
from mappings.tests.test_mapping_sets import SAMPLE, opportunity_mapping

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def crm(db):
    canonical_entities_install()
    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    return ConnectedSystemFactory(slug="crm-test", name="CRM test")


@pytest.fixture
def published_and_draft(crm):
    v1 = opportunity_mapping(crm)
    mapping_sample_save(mapping_set=v1, name="closed won deal", payload=SAMPLE)
    mapping_set_publish(mapping_set=v1, confirm=True)
    return v1, mapping_set_create_draft(mapping_set=v1)


def post(client, url, body=None):
    return client.post(url, body or {}, content_type="application/json")


# --- mapping sets --------------------------------------------------------------------------------------


def test_create_a_mapping_set_then_a_rule_and_read_it_back_with_nested_rules(crm, client_as):
    client = client_as("analyst")
    created = post(
        client,
        "/api/v1/mapping-sets/",
        {"name": "CRM opportunity", "system": "crm-test", "entity": "opportunity", "direction": "inbound"},
    )
    assert created.status_code == 201, created.content
    assert (created.json()["version"], created.json()["status"]) == (1, "draft")
    mapping_id = created.json()["id"]
    rule = post(
        client,
        "/api/v1/field-rules/",
        {"mapping_set": mapping_id, "target_path": "name", "source_paths": ["Name"], "steps": [{"transform": "trim"}]},
    )
    assert rule.status_code == 201, rule.content
    detail = client.get(f"/api/v1/mapping-sets/{mapping_id}/").json()
    assert detail["rules"][0]["target_path"] == "name" and detail["rules"][0]["steps"] == [{"transform": "trim"}]
    listed = client.get("/api/v1/mapping-sets/", {"system__slug": "crm-test", "status": "draft"}).json()
    assert [item["id"] for item in listed["results"]] == [mapping_id]


def test_a_second_mapping_for_the_same_lineage_is_a_conflict(published_and_draft, client_as):
    response = post(
        client_as("analyst"),
        "/api/v1/mapping-sets/",
        {"name": "again", "system": "crm-test", "entity": "opportunity", "direction": "inbound"},
    )
    assert response.status_code == 409 and response["Content-Type"] == PROBLEM
    assert MappingSet.objects.count() == 2


def test_a_draft_can_be_renamed_but_its_lineage_is_fixed_and_a_published_version_is_not_edited(
    published_and_draft, client_as
):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    renamed = client.patch(f"/api/v1/mapping-sets/{v2.pk}/", {"name": "CRM opp v2"}, content_type="application/json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "CRM opp v2"
    moved = client.patch(f"/api/v1/mapping-sets/{v2.pk}/", {"direction": "outbound"}, content_type="application/json")
    assert moved.status_code == 422 and moved.json()["errors"][0]["field"] == "direction"
    published = client.patch(f"/api/v1/mapping-sets/{v1.pk}/", {"name": "x"}, content_type="application/json")
    assert published.status_code == 409
    assert MappingSet.objects.get(pk=v1.pk).name == "CRM opportunity"


def test_only_a_draft_is_deleted(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    assert client.delete(f"/api/v1/mapping-sets/{v1.pk}/").status_code == 409
    assert client.delete(f"/api/v1/mapping-sets/{v2.pk}/").status_code == 204
    assert list(MappingSet.objects.values_list("version", flat=True)) == [1]


def test_preview_maps_a_payload_with_the_saved_rules_or_with_posted_rules(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("auditor")  # previewing writes nothing: reading is enough
    saved = post(client, f"/api/v1/mapping-sets/{v2.pk}/preview/", {"payload": SAMPLE})
    assert saved.status_code == 200
    assert saved.json() == {
        "output": {
            "id": "006A",
            "name": "Atlas",
            "stage": "closed_won",
            "client": {"client_id": "001A"},
            "currency": "GBP",
        },
        "errors": [],
    }
    rules = [{"target_path": "name", "source_paths": ["Name"], "steps": [{"transform": "upper"}]}]
    tried = post(client, f"/api/v1/mapping-sets/{v2.pk}/preview/", {"payload": SAMPLE, "rules": rules}).json()
    assert tried["output"] == {"name": "ATLAS"}
    assert v2.rules.get(target_path="name").steps == []


def test_preview_errors_name_the_field_source_and_value(published_and_draft, client_as):
    _, v2 = published_and_draft
    body = post(
        client_as("analyst"), f"/api/v1/mapping-sets/{v2.pk}/preview/", {"payload": {**SAMPLE, "StageName": "Lost"}}
    ).json()
    assert [(e["target"], e["source"], e["value"]) for e in body["errors"]] == [("stage", "StageName", "Lost")]


def test_preview_of_a_payload_that_is_not_an_object_is_refused(published_and_draft, client_as):
    _, v2 = published_and_draft
    response = post(client_as("analyst"), f"/api/v1/mapping-sets/{v2.pk}/preview/", {"payload": [1, 2]})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "payload"


def test_publish_is_blocked_by_a_broken_sample_then_reports_the_diff_then_publishes(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    currency = v2.rules.get(target_path="currency")
    name = v2.rules.get(target_path="name")
    # given a draft that lowercases the currency (the canonical schema refuses it)
    patched = client.patch(
        f"/api/v1/field-rules/{currency.pk}/", {"steps": [{"transform": "lower"}]}, content_type="application/json"
    )
    assert patched.status_code == 200, patched.content
    # when it is published, the gate refuses with 422 naming the sample and the field
    blocked = post(client, f"/api/v1/mapping-sets/{v2.pk}/publish/", {"confirm": True})
    assert blocked.status_code == 422 and blocked["Content-Type"] == PROBLEM
    assert blocked.json()["errors"][0]["field"] == "samples.closed won deal.currency"
    assert MappingSet.objects.get(pk=v2.pk).status == "draft"
    # when fixed, the dry run reports the diff per sample
    for rule, steps in ((currency, [{"transform": "upper"}]), (name, [{"transform": "upper"}])):
        client.patch(f"/api/v1/field-rules/{rule.pk}/", {"steps": steps}, content_type="application/json")
    dry = post(client, f"/api/v1/mapping-sets/{v2.pk}/publish/", {"confirm": False}).json()
    assert dry["published"] is False and dry["blocked"] is False
    assert dry["outcomes"] == [
        {
            "sample": "closed won deal",
            "output": dry["outcomes"][0]["output"],
            "errors": [],
            "diff": [{"path": "name", "before": "Atlas", "after": "ATLAS"}],
        }
    ]
    # and confirming publishes it and retires v1
    done = post(client, f"/api/v1/mapping-sets/{v2.pk}/publish/", {"confirm": True})
    assert done.status_code == 200 and done.json()["published"] is True
    assert MappingSet.objects.get(pk=v1.pk).status == "retired"
    assert MappingSet.objects.get(pk=v2.pk).status == "published"


def test_export_then_import_as_a_new_draft(published_and_draft, client_as):
    _, v2 = published_and_draft
    client = client_as("analyst")
    client.delete(f"/api/v1/mapping-sets/{v2.pk}/")
    v1 = MappingSet.objects.get()
    exported = client.get(f"/api/v1/mapping-sets/{v1.pk}/export/").json()
    assert exported["version"] == 1 and exported["samples"][0]["name"] == "closed won deal"
    imported = post(client, "/api/v1/mapping-sets/import/", exported)
    assert imported.status_code == 201, imported.content
    assert (imported.json()["version"], imported.json()["status"], len(imported.json()["rules"])) == (2, "draft", 5)


def test_import_of_a_broken_export_is_422_and_stores_nothing(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    exported = client.get(f"/api/v1/mapping-sets/{v1.pk}/export/").json()
    client.delete(f"/api/v1/mapping-sets/{v2.pk}/")
    exported["rules"][0]["steps"] = [{"transform": "nope"}]
    before = (MappingSet.objects.count(), FieldRule.objects.count())
    response = post(client, "/api/v1/mapping-sets/import/", exported)
    assert response.status_code == 422 and "Rule 1 (id)" in response.json()["detail"]
    assert (MappingSet.objects.count(), FieldRule.objects.count()) == before


def test_import_checks_the_shape_of_the_export_and_names_the_field(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("analyst")
    exported = client.get(f"/api/v1/mapping-sets/{v1.pk}/export/").json()
    client.delete(f"/api/v1/mapping-sets/{v2.pk}/")
    exported["rules"][1] = "not a rule"
    exported["value_maps"] = [{"entries": {"a": "b"}}]
    before = (MappingSet.objects.count(), FieldRule.objects.count())
    response = post(client, "/api/v1/mapping-sets/import/", exported)
    assert response.status_code in (400, 422), response.content
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"rules.1", "value_maps.0.name"} <= fields, fields
    assert (MappingSet.objects.count(), FieldRule.objects.count()) == before


def test_import_takes_json_only(published_and_draft, client_as):
    # an export nests lists of objects; a form body (rules=false) cannot carry one
    response = client_as("analyst").post(
        "/api/v1/mapping-sets/import/",
        "format=integrationhub.mapping-set%2F1&rules=false&name=x&system=crm&entity=invoice&direction=inbound",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 415, response.content


def test_create_draft_and_retire_actions(crm, client_as):
    v1 = opportunity_mapping(crm)
    mapping_set_publish(mapping_set=v1, confirm=True)
    client = client_as("analyst")
    draft = post(client, f"/api/v1/mapping-sets/{v1.pk}/create-draft/")
    assert draft.status_code == 201 and draft.json()["version"] == 2 and len(draft.json()["rules"]) == 5
    retired = post(client, f"/api/v1/mapping-sets/{v1.pk}/retire/")
    assert retired.status_code == 200 and retired.json()["status"] == "retired"


def test_samples_action_saves_a_sample_of_the_lineage(published_and_draft, client_as):
    _, v2 = published_and_draft
    response = post(
        client_as("analyst"), f"/api/v1/mapping-sets/{v2.pk}/samples/", {"name": "second", "payload": SAMPLE}
    )
    assert response.status_code == 201
    assert MappingSample.objects.filter(lineage=v2.lineage).count() == 2


def test_auditor_reads_but_every_write_is_403_and_changes_nothing(published_and_draft, client_as):
    v1, v2 = published_and_draft
    client = client_as("auditor")
    rule = v2.rules.get(target_path="name")
    value_map = ValueMap.objects.get(name="sf-stage")
    assert client.get("/api/v1/mapping-sets/").status_code == 200
    assert client.get(f"/api/v1/mapping-sets/{v1.pk}/export/").status_code == 200
    writes = [
        post(
            client,
            "/api/v1/mapping-sets/",
            {"name": "x", "system": "crm-test", "entity": "client", "direction": "inbound"},
        ),
        client.patch(f"/api/v1/mapping-sets/{v2.pk}/", {"name": "x"}, content_type="application/json"),
        client.delete(f"/api/v1/mapping-sets/{v2.pk}/"),
        post(client, f"/api/v1/mapping-sets/{v2.pk}/publish/", {"confirm": True}),
        post(client, f"/api/v1/mapping-sets/{v1.pk}/retire/"),
        post(client, f"/api/v1/mapping-sets/{v1.pk}/create-draft/"),
        post(client, f"/api/v1/mapping-sets/{v2.pk}/samples/", {"name": "x", "payload": SAMPLE}),
        post(client, "/api/v1/mapping-sets/import/", {"format": "integrationhub.mapping-set/1"}),
        post(client, "/api/v1/field-rules/", {"mapping_set": v2.pk, "target_path": "x", "source_paths": ["X"]}),
        client.patch(
            f"/api/v1/field-rules/{rule.pk}/", {"steps": [{"transform": "upper"}]}, content_type="application/json"
        ),
        client.delete(f"/api/v1/field-rules/{rule.pk}/"),
        post(client, "/api/v1/value-maps/", {"name": "x", "entries": {"a": "b"}}),
        client.patch(f"/api/v1/value-maps/{value_map.pk}/", {"entries": {}}, content_type="application/json"),
        client.delete(f"/api/v1/value-maps/{value_map.pk}/"),
    ]
    assert [response.status_code for response in writes] == [403] * len(writes)
    assert all(response["Content-Type"] == PROBLEM for response in writes)
    assert MappingSet.objects.count() == 2
    assert [m.status for m in MappingSet.objects.order_by("version")] == ["published", "draft"]
    assert MappingSet.objects.get(pk=v2.pk).name == "CRM opportunity"
    assert FieldRule.objects.get(pk=rule.pk).steps == []
    assert MappingSample.objects.count() == 1
    assert value_map.entries.count() == 1 and ValueMap.objects.count() == 1


# --- field rules ---------------------------------------------------------------------------------------


def test_a_rule_with_an_unknown_transform_is_refused_naming_the_step(published_and_draft, client_as):
    _, v2 = published_and_draft
    response = post(
        client_as("analyst"),
        "/api/v1/field-rules/",
        {
            "mapping_set": v2.pk,
            "target_path": "amount",
            "source_paths": ["Amount"],
            "steps": [{"transform": "trim"}, {"transform": "money"}],
        },
    )
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    error = response.json()["errors"][0]
    assert error["field"] == "steps" and "Step 2: unknown transform 'money'" in error["message"]
    assert not v2.rules.filter(target_path="amount").exists()


def test_a_bad_parameter_is_refused_naming_the_step_and_parameter(published_and_draft, client_as):
    _, v2 = published_and_draft
    rule = v2.rules.get(target_path="stage")
    response = client_as("analyst").patch(
        f"/api/v1/field-rules/{rule.pk}/",
        {"steps": [{"transform": "map_value", "params": {"value_map": "no-such-map"}}]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "Step 1 (map_value): value map 'no-such-map' does not exist" in response.json()["detail"]
    assert FieldRule.objects.get(pk=rule.pk).steps == [{"transform": "map_value", "params": {"value_map": "sf-stage"}}]


def test_rules_of_a_published_version_are_not_changed_or_deleted(published_and_draft, client_as):
    v1, _ = published_and_draft
    client = client_as("analyst")
    rule = v1.rules.get(target_path="name")
    changed = client.patch(
        f"/api/v1/field-rules/{rule.pk}/", {"steps": [{"transform": "upper"}]}, content_type="application/json"
    )
    deleted = client.delete(f"/api/v1/field-rules/{rule.pk}/")
    assert (changed.status_code, deleted.status_code) == (400, 409)
    assert "edit a new draft version" in changed.json()["detail"]
    assert FieldRule.objects.get(pk=rule.pk).steps == []


# --- value maps ----------------------------------------------------------------------------------------


def test_value_map_crud_with_entries(crm, client_as):
    client = client_as("analyst")
    created = post(
        client,
        "/api/v1/value-maps/",
        {"name": "erp-status", "unmapped": "default", "default_value": "unknown", "entries": {"A": "active"}},
    )
    assert created.status_code == 201, created.content
    map_id = created.json()["id"]
    assert created.json()["entries"] == {"A": "active"}
    updated = client.patch(
        f"/api/v1/value-maps/{map_id}/", {"entries": {"A": "active", "C": "closed"}}, content_type="application/json"
    )
    assert updated.json()["entries"] == {"A": "active", "C": "closed"}
    replaced = client.patch(
        f"/api/v1/value-maps/{map_id}/", {"entries": {"C": "closed"}}, content_type="application/json"
    )
    assert replaced.json()["entries"] == {"C": "closed"}
    assert client.get("/api/v1/value-maps/", {"search": "erp"}).json()["count"] == 1
    assert client.delete(f"/api/v1/value-maps/{map_id}/").status_code == 204
    assert not ValueMap.objects.filter(name="erp-status").exists()


def test_a_value_map_in_use_is_not_deleted(published_and_draft, client_as):
    value_map = ValueMap.objects.get(name="sf-stage")
    response = client_as("analyst").delete(f"/api/v1/value-maps/{value_map.pk}/")
    assert response.status_code == 409 and "CRM opportunity v1" in response.json()["detail"]
    assert ValueMap.objects.filter(pk=value_map.pk).exists()


def test_a_duplicate_value_map_name_is_refused(crm, client_as):
    response = post(client_as("analyst"), "/api/v1/value-maps/", {"name": "sf-stage"})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "name"
