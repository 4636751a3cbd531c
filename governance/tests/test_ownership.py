"""Ownership rules: who owns a field at a stage, and rejection of rules that claim the same fields."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from governance import services
from governance.models import OwnershipRule
from governance.selectors import owner_of
from governance.tests.factories import CanonicalEntityFactory, ConnectedSystemFactory, OwnershipRuleFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def systems():
    return {slug: ConnectedSystemFactory(slug=slug) for slug in ("psa", "erp", "crm")}


@pytest.fixture
def time_entry():
    return CanonicalEntityFactory(name="time_entry")


def test_field_rule_beats_all_fields_rule_and_dotted_prefix_matches(systems, time_entry):
    # given
    OwnershipRuleFactory(entity=time_entry, owning_system=systems["psa"])
    billing = OwnershipRuleFactory(entity=time_entry, field_group=["billing"], owning_system=systems["erp"])

    # when / then
    assert owner_of(entity=time_entry, field="billing.method") == billing
    assert owner_of(entity="time_entry", field="billing") == billing
    assert owner_of(entity=time_entry, field="billingcode").owning_system == systems["psa"]  # not a dotted prefix
    assert owner_of(entity=time_entry, field="hours").owning_system == systems["psa"]


def test_stage_rule_beats_rule_for_every_stage(systems, time_entry):
    # given
    OwnershipRuleFactory(entity=time_entry, field_group=["status"], owning_system=systems["psa"])
    posted_all = OwnershipRuleFactory(entity=time_entry, lifecycle_stage="posted", owning_system=systems["erp"])

    # when / then: at "posted", even an all-fields rule for the stage wins over a field rule for every stage
    assert owner_of(entity=time_entry, field="status", stage="posted") == posted_all
    assert owner_of(entity=time_entry, field="status", stage="draft").owning_system == systems["psa"]
    assert owner_of(entity=time_entry, field="status").owning_system == systems["psa"]


def test_stage_field_rule_beats_stage_all_fields_rule(systems, time_entry):
    OwnershipRuleFactory(entity=time_entry, lifecycle_stage="posted", owning_system=systems["erp"])
    rule = OwnershipRuleFactory(
        entity=time_entry, lifecycle_stage="posted", field_group=["approval"], owning_system=systems["psa"]
    )
    assert owner_of(entity=time_entry, field="approval.by", stage="posted") == rule


def test_no_rule_means_no_owner(systems, time_entry):
    OwnershipRuleFactory(entity=time_entry, field_group=["billing"], owning_system=systems["erp"])
    assert owner_of(entity=time_entry, field="hours") is None
    assert owner_of(entity="project", field="billing") is None


def test_two_rules_claiming_the_same_field_are_rejected_naming_both(systems, time_entry):
    # given
    existing = OwnershipRuleFactory(entity=time_entry, field_group=["billing", "hours"], owning_system=systems["erp"])
    rule = OwnershipRule(entity=time_entry, field_group=["hours", "status"], owning_system=systems["psa"])

    # when
    with pytest.raises(ValidationError) as caught:
        services.ownership_rule_save(rule=rule)

    # then
    message = caught.value.message_dict["field_group"][0]
    assert f"rule #{existing.pk} ({existing})" in message
    assert str(rule) in message and "hours" in message and "status" not in message.split("claim")[1]
    assert OwnershipRule.objects.count() == 1


def test_dotted_prefix_overlap_is_a_conflict(systems, time_entry):
    OwnershipRuleFactory(entity=time_entry, field_group=["billing"], owning_system=systems["erp"])
    rule = OwnershipRule(entity=time_entry, field_group=["billing.method"], owning_system=systems["psa"])
    with pytest.raises(ValidationError, match=r"billing\.method / billing"):
        rule.full_clean()


def test_two_all_fields_rules_for_the_same_stage_conflict(systems, time_entry):
    OwnershipRuleFactory(entity=time_entry, owning_system=systems["erp"])
    with pytest.raises(ValidationError, match="all fields"):
        OwnershipRule(entity=time_entry, owning_system=systems["psa"]).full_clean()


def test_same_fields_at_another_stage_or_entity_do_not_conflict(systems, time_entry):
    OwnershipRuleFactory(entity=time_entry, field_group=["billing"], owning_system=systems["erp"])
    services.ownership_rule_save(
        rule=OwnershipRule(
            entity=time_entry, field_group=["billing"], lifecycle_stage="posted", owning_system=systems["psa"]
        )
    )
    services.ownership_rule_save(
        rule=OwnershipRule(
            entity=CanonicalEntityFactory(name="project"), field_group=["billing"], owning_system=systems["psa"]
        )
    )
    assert OwnershipRule.objects.count() == 3


def test_saving_a_rule_again_does_not_conflict_with_itself(systems, time_entry):
    rule = OwnershipRuleFactory(entity=time_entry, field_group=["billing"], owning_system=systems["erp"])
    rule.notes = "ERP is the billing master"
    services.ownership_rule_save(rule=rule)
    assert OwnershipRule.objects.get(pk=rule.pk).notes == "ERP is the billing master"


@pytest.mark.parametrize("bad", [["billing..method"], ["1abc"], "billing", ["a", "a"]])
def test_field_group_must_be_distinct_dotted_paths(systems, time_entry, bad):
    with pytest.raises(ValidationError) as caught:
        OwnershipRule(entity=time_entry, field_group=bad, owning_system=systems["erp"]).full_clean()
    assert "field_group" in caught.value.message_dict
