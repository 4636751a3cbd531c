"""Samples kept from real messages (masked, bounded), the honest publish gate, error attribution and formats
checked exactly as at run time, the compiled-mapping cache following a canonical schema publish, and the
editor's advanced JSON view saving rules back exactly."""

from __future__ import annotations

import pytest

from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.errors import HubValidationError
from mappings import runtime
from mappings.choices import SampleOrigin
from mappings.compiler import MappingSpec, RuleSpec, compile_mapping
from mappings.editor import rule_as_row
from mappings.models import CanonicalEntity, FieldRule, MappingSample, MappingSet, ValueMap, ValueMapEntry
from mappings.services import (
    MASKED_EMAIL,
    canonical_entities_install,
    canonical_schema_edit,
    canonical_schema_publish,
    field_rule_save,
    mapping_preview,
    mapping_rules_save,
    mapping_sample_capture,
    mapping_sample_save,
    mapping_set_create,
    mapping_set_create_draft,
    mapping_set_publish,
    schema_sensitive_paths,
)
from mappings.tests.test_mapping_sets import SAMPLE, opportunity_mapping

CONTACT = {
    "Id": "003A",
    "AccountId": "001A",
    "FirstName": "Ada",
    "LastName": "Lovelace",
    "Mail": "ada.lovelace@client.example",
    "Tel": "+44 20 7946 0958",
}


@pytest.fixture
def crm(db):
    canonical_entities_install()
    return ConnectedSystemFactory(slug="crm-samples")


def contact_mapping(system) -> MappingSet:
    mapping_set = mapping_set_create(
        name="CRM contact", system=system, entity=CanonicalEntity.objects.get(name="contact"), direction="inbound"
    )
    for position, (target, source) in enumerate(
        [
            ("id", "Id"),
            ("client_id", "AccountId"),
            ("first_name", "FirstName"),
            ("last_name", "LastName"),
            ("email", "Mail"),
            ("phone", "Tel"),
        ]
    ):
        field_rule_save(
            rule=FieldRule(mapping_set=mapping_set, position=position, target_path=target, source_paths=[source])
        )
    return mapping_set


def test_the_shipped_contact_schema_marks_email_and_phone_sensitive(crm):
    schema = CanonicalEntity.objects.get(name="contact").published_schema
    assert {"email", "phone"} <= schema_sensitive_paths(schema.json_schema)
    assert "first_name" not in schema_sensitive_paths(schema.json_schema)


def test_a_kept_sample_masks_the_sources_of_sensitive_fields_and_still_maps(crm, settings):
    settings.HUB_MAPPING_SAMPLES_KEPT = 5
    mapping_set = contact_mapping(crm)
    # when a real message's payload is kept
    sample = mapping_sample_capture(mapping_set=mapping_set, payload=CONTACT, message_id=41)
    # then the sensitive sources are masked in their shape, the rest is kept as it came
    assert sample is not None and sample.origin == SampleOrigin.CAPTURED and sample.message_id == 41
    assert sample.payload["Mail"] == MASKED_EMAIL
    assert sample.payload["Tel"] == "+00 00 0000 0000"
    assert sample.payload["FirstName"] == "Ada" and sample.payload["Id"] == "003A"
    assert "ada.lovelace" not in str(MappingSample.objects.values_list("payload", flat=True)[0])
    # and the masked sample still maps cleanly (formats and patterns hold), so the gate can replay it
    assert mapping_preview(mapping_set=mapping_set, payload=sample.payload)["errors"] == []


def test_only_the_most_recent_kept_samples_stay_and_saved_ones_are_never_pruned(crm, settings):
    settings.HUB_MAPPING_SAMPLES_KEPT = 2
    mapping_set = contact_mapping(crm)
    mapping_sample_save(mapping_set=mapping_set, name="analyst's sample", payload=CONTACT)
    for message_id in (1, 2, 3):
        mapping_sample_capture(
            mapping_set=mapping_set, payload={**CONTACT, "Id": f"00{message_id}"}, message_id=message_id
        )
    kept = MappingSample.objects.filter(lineage=mapping_set.lineage)
    assert sorted(kept.filter(origin=SampleOrigin.CAPTURED).values_list("message_id", flat=True)) == [2, 3]
    assert kept.filter(origin=SampleOrigin.SAVED).count() == 1


def test_keeping_no_samples_is_a_setting(crm, settings):
    settings.HUB_MAPPING_SAMPLES_KEPT = 0
    mapping_set = contact_mapping(crm)
    assert mapping_sample_capture(mapping_set=mapping_set, payload=CONTACT, message_id=7) is None
    assert not MappingSample.objects.exists()


def test_publishing_with_no_sample_needs_a_reason_kept_in_history(crm):
    v1 = contact_mapping(crm)
    mapping_set_publish(mapping_set=v1, confirm=True)  # set-up code installs the first version
    v2 = mapping_set_create_draft(mapping_set=v1)
    # the dry run answers an empty report
    assert mapping_set_publish(mapping_set=v2, confirm=False).outcomes == []
    # confirming without a reason is refused, naming the field, and nothing changes
    with pytest.raises(HubValidationError) as refused:
        mapping_set_publish(mapping_set=v2, confirm=True, no_sample_reason="  ")
    assert refused.value.errors[0]["field"] == "no_sample_reason"
    assert MappingSet.objects.get(pk=v2.pk).status == "draft"
    # with a reason it publishes, and the reason is on the version and in its history
    mapping_set_publish(mapping_set=v2, confirm=True, no_sample_reason="Typo fix in notes only; no rule changed")
    v2.refresh_from_db()
    assert v2.status == "published"
    assert v2.published_without_samples_reason == "Typo fix in notes only; no rule changed"
    latest = v2.history.order_by("-history_id").first()
    assert latest.history_change_reason == "published v2 without samples: Typo fix in notes only; no rule changed"


def test_a_kept_sample_is_replayed_by_the_gate_and_needs_no_reason(crm):
    v1 = contact_mapping(crm)
    mapping_set_publish(mapping_set=v1, confirm=True)
    mapping_sample_capture(mapping_set=v1, payload=CONTACT, message_id=9)
    v2 = mapping_set_create_draft(mapping_set=v1)
    v2.rules.filter(target_path="first_name").update(steps=[{"transform": "upper"}])
    report = mapping_set_publish(mapping_set=v2, confirm=True)
    assert report.published
    assert report.outcomes[0].sample == "message #9"
    assert report.outcomes[0].diff == [{"path": "first_name", "before": "Ada", "after": "ADA"}]


def test_publishing_a_canonical_schema_reaches_compiled_mappings_in_every_process(
    crm, django_capture_on_commit_callbacks
):
    # given a published contact mapping, compiled and cached by this process
    mapping_set = contact_mapping(crm)
    mapping_set_publish(mapping_set=mapping_set, confirm=True)
    record = {"Id": "003B", "AccountId": "001A", "FirstName": "Grace", "LastName": "Hopper"}
    cached = runtime.compiled_mapping(mapping_set.pk)
    assert cached.map_one(record).errors == []
    assert runtime.compiled_mapping(mapping_set.pk) is cached
    generation = runtime.mapping_generation()
    # when v2 of the contact schema, with email required, is published
    entity = CanonicalEntity.objects.get(name="contact")
    schema = dict(entity.published_schema.json_schema)
    schema["required"] = [*schema.get("required", []), "email"]
    with django_capture_on_commit_callbacks(execute=True):
        canonical_schema_publish(schema=canonical_schema_edit(entity=entity, json_schema=schema))
    # then the shared generation moved (every process drops its compiled mappings when it sees it), and the
    # next message is checked against v2: the new required field is enforced without a restart
    assert runtime.mapping_generation() == generation + 1
    errors = runtime.compiled_mapping(mapping_set.pk).map_one(record).errors
    assert [error.target for error in errors] == ["email"]


def test_a_second_process_sees_the_generation_through_the_shared_cache(crm, django_capture_on_commit_callbacks):
    # the shared generation lives in the cache all processes use (Redis here); another connection reads it
    from django.core.cache import caches

    other = caches.create_connection("default")
    before = other.get(runtime.GENERATION_KEY) or runtime.mapping_generation()
    entity = CanonicalEntity.objects.get(name="contact")
    with django_capture_on_commit_callbacks(execute=True):
        canonical_schema_publish(
            schema=canonical_schema_edit(entity=entity, json_schema=entity.published_schema.json_schema)
        )
    assert int(other.get(runtime.GENERATION_KEY)) > int(before)


def test_each_missing_required_field_is_named_on_its_own_rule():
    spec = MappingSpec(
        label="time entry",
        rules=[RuleSpec(target="approved_at", sources=["ApprovedOn"]), RuleSpec(target="billable", sources=["Bill"])],
        output_schema={
            "type": "object",
            "required": ["approved_at", "approver_id", "billable", "approval_status"],
            "properties": {"approved_at": {"type": "string"}, "billable": {"type": "boolean"}},
        },
    )
    errors = compile_mapping(spec).map_one({"Other": 1}).errors
    by_target = {error.target: error.message for error in errors}
    assert by_target == {
        "approved_at": "'approved_at' is a required property",
        "approver_id": "'approver_id' is a required property",
        "billable": "'billable' is a required property",
        "approval_status": "'approval_status' is a required property",
    }
    # the rule-less fields carry no source: nothing from another rule is blamed
    assert {error.target: error.source for error in errors}["approver_id"] == ""


def test_a_bad_date_and_a_negative_rate_are_refused_by_the_preview_as_at_run_time(crm):
    # given a time entry mapping against the shipped schema
    mapping_set = mapping_set_create(
        name="PSA time", system=crm, entity=CanonicalEntity.objects.get(name="time_entry"), direction="inbound"
    )
    fields = ["id", "resource_id", "project_id", "date", "hours", "billable", "approval_status", "legal_entity_code"]
    for position, name in enumerate([*fields, "rate"]):
        field_rule_save(
            rule=FieldRule(mapping_set=mapping_set, position=position, target_path=name, source_paths=[name])
        )
    good = {
        "id": "te-1",
        "resource_id": "r-1",
        "project_id": "p-1",
        "date": "2026-03-02",
        "hours": 7.5,
        "billable": True,
        "approval_status": "submitted",
        "legal_entity_code": "UK01",
        "rate": "120.00",
    }
    assert mapping_preview(mapping_set=mapping_set, payload=good)["errors"] == []
    bad = mapping_preview(mapping_set=mapping_set, payload={**good, "date": "2026-13-45", "rate": "-5"})
    assert {error["target"] for error in bad["errors"]} == {"date", "rate"}
    assert any("is not a 'date'" in error["message"] for error in bad["errors"] if error["target"] == "date")
    # the run-time path (the cached compiled mapping the workers use) refuses the same record the same way
    mapping_set_publish(mapping_set=mapping_set, confirm=True)
    at_run_time = runtime.compiled_mapping(mapping_set.pk).map_one({**good, "date": "2026-13-45", "rate": "-5"})
    assert sorted(error.as_dict()["message"] for error in at_run_time.errors) == sorted(
        error["message"] for error in bad["errors"]
    )


def test_the_advanced_json_of_the_rules_saves_back_exactly(crm):
    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    mapping_set = opportunity_mapping(ConnectedSystemFactory(slug="crm-json"))
    field_rule_save(
        rule=FieldRule(
            mapping_set=mapping_set,
            position=9,
            target_path="probability_percent",
            source_paths=["Probability"],
            steps=[{"transform": "case", "params": {"cases": [{"when": "High", "then": 90}], "default": 10}}],
            has_default=True,
            default_value=0,
            condition={"path": "StageName", "op": "equals", "value": "Closed Won"},
            notes="from the stage",
        )
    )
    rows = [rule_as_row(rule) for rule in mapping_set.rules.all()]
    # the editor's advanced view is these rows as JSON; applying it unchanged and saving stores the same rules
    import json

    text = json.dumps(rows, indent=2)
    mapping_rules_save(mapping_set=mapping_set, rules=json.loads(text), reason="round trip")
    assert [rule_as_row(rule) for rule in mapping_set.rules.all()] == rows
    assert SAMPLE  # the shared opportunity sample keeps its shape


def test_a_regional_editor_lists_inherited_rules_in_words(crm):
    from governance.models import LegalEntity
    from mappings.editor import inherited_rows

    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    enterprise = opportunity_mapping(ConnectedSystemFactory(slug="crm-regional"))
    uk = LegalEntity.objects.create(
        code="UK01", name="UK", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    regional = mapping_set_create(
        name="UK",
        system=enterprise.system,
        entity=enterprise.entity,
        direction="inbound",
        legal_entity=uk,
        parent=enterprise,
    )
    rows = {row["target_path"]: row for row in inherited_rows(regional)}
    assert rows["stage"]["steps"] == 'map_value (value_map: "sf-stage")'
    assert rows["currency"]["steps"] == "upper"
    assert rows["name"]["steps"] == "copied as is"
    assert "{'" not in str([row["steps"] for row in rows.values()])  # never a Python repr


def test_the_target_picker_lists_canonical_fields_with_required_ones_marked(crm):
    from mappings.editor import canonical_target_fields

    mapping_set = contact_mapping(crm)
    fields = {field["path"]: field for field in canonical_target_fields(mapping_set)}
    assert fields["client_id"]["required"] and fields["last_name"]["required"]
    assert not fields["first_name"]["required"]
    assert fields["email"]["format"] == "email" and fields["email"]["sensitive"]
