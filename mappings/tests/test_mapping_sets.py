import pytest

from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.errors import HubValidationError
from mappings import runtime
from mappings.models import CanonicalEntity, FieldRule, MappingSet, ValueMap, ValueMapEntry
from mappings.services import (
    canonical_entities_install,
    field_rule_save,
    mapping_preview,
    mapping_sample_save,
    mapping_set_create,
    mapping_set_create_draft,
    mapping_set_export,
    mapping_set_import,
    mapping_set_publish,
    output_diff,
)

SAMPLE = {"Id": "006A", "Name": "Atlas", "StageName": "Closed Won", "AccountId": "001A", "CurrencyIsoCode": "gbp"}


@pytest.fixture
def crm(db):
    canonical_entities_install()
    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    ValueMapEntry.objects.create(value_map=stage, source_value="Prospecting", target_value="prospecting")
    return ConnectedSystemFactory(slug="crm-test")


def opportunity_mapping(system, **extra):
    mapping_set = mapping_set_create(
        name="CRM opportunity",
        system=system,
        entity=CanonicalEntity.objects.get(name="opportunity"),
        direction="inbound",
        **extra,
    )
    for position, (target, sources, steps) in enumerate(
        [
            ("id", ["Id"], []),
            ("name", ["Name"], []),
            ("stage", ["StageName"], [{"transform": "map_value", "params": {"value_map": "sf-stage"}}]),
            ("client.client_id", ["AccountId"], []),
            ("currency", ["CurrencyIsoCode"], [{"transform": "upper"}]),
        ]
    ):
        field_rule_save(
            rule=FieldRule(
                mapping_set=mapping_set, position=position, target_path=target, source_paths=sources, steps=steps
            )
        )
    return mapping_set


def test_a_rule_with_an_unknown_transform_is_rejected_when_saved(crm):
    mapping_set = opportunity_mapping(crm)
    rule = FieldRule(
        mapping_set=mapping_set, target_path="amount", source_paths=["Amount"], steps=[{"transform": "money"}]
    )
    with pytest.raises(Exception) as caught:
        field_rule_save(rule=rule)
    assert "unknown transform 'money'" in str(caught.value)
    assert not mapping_set.rules.filter(target_path="amount").exists()


def test_preview_maps_a_sample_and_names_the_failing_field(crm):
    mapping_set = opportunity_mapping(crm)
    good = mapping_preview(mapping_set=mapping_set, payload=SAMPLE)
    bad = mapping_preview(mapping_set=mapping_set, payload={**SAMPLE, "StageName": "Lost somewhere"})
    assert good["errors"] == []
    assert good["output"] == {
        "id": "006A",
        "name": "Atlas",
        "stage": "closed_won",
        "client": {"client_id": "001A"},
        "currency": "GBP",
    }
    assert bad["errors"][0]["target"] == "stage"
    assert bad["errors"][0]["source"] == "StageName"
    assert bad["errors"][0]["value"] == "Lost somewhere"


def test_the_publish_gate_blocks_a_change_that_breaks_a_saved_sample_until_it_is_fixed(crm):
    # given a published mapping with a saved sample
    v1 = opportunity_mapping(crm)
    mapping_sample_save(mapping_set=v1, name="closed won deal", payload=SAMPLE)
    mapping_set_publish(mapping_set=v1, confirm=True)

    # when a new draft maps the currency to a value the schema refuses
    v2 = mapping_set_create_draft(mapping_set=v1)
    rule = v2.rules.get(target_path="currency")
    rule.steps = [{"transform": "lower"}]
    field_rule_save(rule=rule)

    # then publishing is refused, naming the sample and the field, and v1 stays live
    with pytest.raises(HubValidationError) as caught:
        mapping_set_publish(mapping_set=v2, confirm=True)
    assert "would break 1 saved sample" in caught.value.detail
    assert caught.value.errors[0]["field"] == "samples.closed won deal.currency"
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == ("published", "draft")

    # when the rule is fixed, the dry run shows the output diff and confirming publishes
    rule.steps = [
        {"transform": "upper"},
        {"transform": "substring", "params": {"end": 2}},
        {"transform": "default", "params": {"value": "GBP"}},
    ]
    rule.steps = [{"transform": "upper"}]
    field_rule_save(rule=rule)
    name_rule = v2.rules.get(target_path="name")
    name_rule.steps = [{"transform": "upper"}]
    field_rule_save(rule=name_rule)
    preview = mapping_set_publish(mapping_set=v2, confirm=False)
    assert preview.published is False
    assert preview.outcomes[0].diff == [{"path": "name", "before": "Atlas", "after": "ATLAS"}]
    done = mapping_set_publish(mapping_set=v2, confirm=True)
    v1.refresh_from_db()
    assert done.published and v1.status == "retired"
    assert MappingSet.objects.get(pk=v2.pk).status == "published"


def test_publishing_invalidates_the_compiled_mapping_in_every_process(crm, django_capture_on_commit_callbacks):
    v1 = opportunity_mapping(crm)
    with django_capture_on_commit_callbacks(execute=True):
        mapping_set_publish(mapping_set=v1, confirm=True)
    first = runtime.compiled_mapping(v1.pk)
    assert runtime.compiled_mapping(v1.pk) is first  # cached
    generation = runtime.mapping_generation()
    # when a new version is published (another process would only see the shared generation change)
    v2 = mapping_set_create_draft(mapping_set=v1)
    with django_capture_on_commit_callbacks(execute=True):
        mapping_set_publish(mapping_set=v2, confirm=True, no_sample_reason="rules unchanged")
    assert runtime.mapping_generation() > generation
    assert runtime.compiled_mapping(v1.pk) is not first


def test_a_regional_mapping_overrides_the_rules_it_names_and_inherits_the_rest(crm):
    from governance.models import LegalEntity

    enterprise = opportunity_mapping(crm)
    uk = LegalEntity.objects.create(
        code="UK01", name="UK", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    regional = mapping_set_create(
        name="CRM opportunity UK",
        system=crm,
        entity=enterprise.entity,
        direction="inbound",
        legal_entity=uk,
        parent=enterprise,
    )
    field_rule_save(
        rule=FieldRule(
            mapping_set=regional,
            target_path="currency",
            source_paths=["CurrencyIsoCode"],
            steps=[{"transform": "default", "params": {"value": "GBP"}}, {"transform": "upper"}],
        )
    )
    output = mapping_preview(mapping_set=regional, payload={**SAMPLE, "CurrencyIsoCode": ""})["output"]
    assert output["currency"] == "GBP"  # the regional rule
    assert output["stage"] == "closed_won"  # inherited from the enterprise mapping
    # while the enterprise mapping alone passes the empty value through (upper-cased)
    enterprise_output = mapping_preview(mapping_set=enterprise, payload={**SAMPLE, "CurrencyIsoCode": ""})["output"]
    assert enterprise_output["currency"] == ""


def test_export_then_import_promotes_a_set_with_its_rules_maps_and_samples(crm):
    v1 = opportunity_mapping(crm)
    mapping_sample_save(mapping_set=v1, name="deal", payload=SAMPLE)
    exported = mapping_set_export(mapping_set=v1)
    assert exported["version"] == 1
    assert [rule["target_path"] for rule in exported["rules"]][:2] == ["id", "name"]
    assert exported["value_maps"][0]["entries"]["Closed Won"] == "closed_won"
    mapping_set_publish(mapping_set=v1, confirm=True)

    imported = mapping_set_import(data=exported)
    assert imported.version == 2 and imported.status == "draft"
    assert imported.rules.count() == 5
    assert mapping_preview(mapping_set=imported, payload=SAMPLE)["errors"] == []


def test_import_of_a_broken_export_stores_nothing(crm):
    v1 = opportunity_mapping(crm)
    exported = mapping_set_export(mapping_set=v1)
    mapping_set_publish(mapping_set=v1, confirm=True)
    exported["rules"][3]["steps"] = [{"transform": "nope"}]
    before = (MappingSet.objects.count(), FieldRule.objects.count())
    with pytest.raises(HubValidationError) as caught:
        mapping_set_import(data=exported)
    assert "Rule 4 (client.client_id)" in caught.value.detail
    assert (MappingSet.objects.count(), FieldRule.objects.count()) == before


def test_output_diff_lists_changed_added_and_removed_fields():
    before = {"a": 1, "b": {"c": 2, "d": 3}, "gone": True, "lines": [{"x": 1}]}
    after = {"a": 1, "b": {"c": 5, "d": 3}, "new": "n", "lines": [{"x": 2}]}
    assert output_diff(before, after) == [
        {"path": "b.c", "before": 2, "after": 5},
        {"path": "gone", "before": True, "after": None},
        {"path": "lines[0].x", "before": 1, "after": 2},
        {"path": "new", "before": None, "after": "n"},
    ]
