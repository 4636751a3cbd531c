"""The validation rule registry: parameter checking and each rule's passing and failing case."""

from __future__ import annotations

import datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from governance.rules import RuleContext, rule_entries_validate, rule_get, rule_list
from integrationhub.errors import HubNotFoundError


def run(name: str, record: dict, params: dict | None = None, **context):
    return rule_get(name).run(record, params or {}, RuleContext(**context))


def quote(bill: str = "150", cost: str = "90", tolerance: str = "0"):
    return SimpleNamespace(bill_rate=Decimal(bill), cost_rate=Decimal(cost), tolerance_percent=Decimal(tolerance))


def test_registry_lists_every_required_rule_with_label_description_and_schema():
    # given / when
    names = {rule.name for rule in rule_list()}

    # then
    assert {
        "entry_approved",
        "rate_matches_card",
        "cost_code_allowed",
        "project_active_in_erp",
        "resource_known",
        "period_open",
        "required_fields",
        "amount_within_contract_remaining",
        "not_billed_before",
        "client_accepted",
        "max_amount",
    } <= names
    assert all(rule.label and rule.description and rule.params_schema["type"] == "object" for rule in rule_list())


def test_entries_validate_accepts_known_rules_with_valid_params():
    # given
    entries = [{"rule": "entry_approved"}, {"rule": "max_amount", "params": {"max": 1000}}]

    # when / then
    assert rule_entries_validate(entries) == []


def test_entries_validate_names_index_and_field_of_each_problem():
    # given
    entries = [
        {"rule": "entry_approved", "params": {}},
        {"rule": "no_such_rule", "params": {}},
        {"rule": "cost_code_allowed", "params": {"allowed_codes": "C1"}},
        {"rule": "max_amount", "params": {}},
        "not an object",
    ]

    # when
    problems = rule_entries_validate(entries)

    # then
    assert any("validation_rules[1]" in p and "'no_such_rule' is not a known rule" in p for p in problems)
    assert any("validation_rules[2]" in p and "params.allowed_codes" in p for p in problems)
    assert any("validation_rules[3]" in p and "'max' is a required property" in p for p in problems)
    assert any("validation_rules[4]" in p for p in problems)
    assert not any("validation_rules[0]" in p for p in problems)


def test_entries_validate_rejects_unknown_params():
    # given / when
    problems = rule_entries_validate([{"rule": "max_amount", "params": {"max": 5, "maximum": 6}}])

    # then
    assert len(problems) == 1 and "validation_rules[0]" in problems[0] and "maximum" in problems[0]


def test_entry_approved():
    # given / when / then
    assert run("entry_approved", {"status": "approved"}).passed
    failed = run("entry_approved", {"status": "submitted"})
    assert not failed.passed and failed.field == "status" and failed.actual == "submitted"
    assert "approve it" in failed.message


def test_entry_approved_with_custom_field_and_values():
    params = {"field": "approval.state", "approved_values": ["ok"]}
    assert run("entry_approved", {"approval": {"state": "ok"}}, params).passed
    assert not run("entry_approved", {"approval": {}}, params).passed


def test_rate_matches_card_within_the_cards_tolerance():
    # given: a card rate of 150 with 2 % tolerance
    calls = []

    def lookup(**kwargs):
        calls.append(kwargs)
        return quote("150", tolerance="2")

    record = {"rate": "153", "role": "Manager", "date": "2026-05-01", "legal_entity": "UK01", "client_id": "C1"}

    # when
    result = run("rate_matches_card", record, rate_lookup=lookup)

    # then
    assert result.passed and result.expected == Decimal("150") and result.actual == Decimal("153")
    assert calls == [
        {
            "legal_entity": "UK01",
            "role": "Manager",
            "on_date": datetime.date(2026, 5, 1),
            "client": "C1",
            "contract": None,
        }
    ]


def test_rate_matches_card_fails_outside_tolerance_and_param_overrides_card_tolerance():
    record = {"rate": 153, "role": "Manager", "date": "2026-05-01", "legal_entity": "UK01"}
    failed = run("rate_matches_card", record, {"tolerance_percent": 1}, rate_lookup=lambda **_: quote(tolerance="5"))
    assert not failed.passed and failed.expected == Decimal("150") and "1" in failed.message


def test_rate_matches_card_checks_cost_rate_when_asked():
    record = {"cost": "90", "role": "Manager", "date": "2026-05-01", "legal_entity": "UK01"}
    params = {"rate_kind": "cost", "rate_field": "cost"}
    assert run("rate_matches_card", record, params, rate_lookup=lambda **_: quote()).passed
    assert not run("rate_matches_card", {**record, "cost": "91"}, params, rate_lookup=lambda **_: quote()).passed


def test_rate_matches_card_fails_with_the_lookups_message_when_no_card_applies():
    def lookup(**_):
        raise HubNotFoundError("No rate card of legal entity UK01 lists role 'Manager' on 2026-05-01.")

    record = {"rate": "150", "role": "Manager", "date": "2026-05-01", "legal_entity": "UK01"}
    result = run("rate_matches_card", record, rate_lookup=lookup)
    assert not result.passed and "No rate card" in result.message


def test_rate_matches_card_fails_without_a_lookup_or_a_role():
    record = {"rate": "150", "role": "Manager", "date": "2026-05-01", "legal_entity": "UK01"}
    assert "no rate lookup" in run("rate_matches_card", record).message
    missing = run("rate_matches_card", {**record, "role": ""}, rate_lookup=lambda **_: quote())
    assert not missing.passed and missing.field == "role"


def test_cost_code_allowed():
    params = {"allowed_codes": ["C100", "C200"]}
    assert run("cost_code_allowed", {"cost_code": "C200"}, params).passed
    failed = run("cost_code_allowed", {"cost_code": "C999"}, params)
    assert not failed.passed and failed.expected == ["C100", "C200"] and "C100, C200" in failed.message


def test_project_active_in_erp_with_a_set_and_with_a_callable():
    assert run("project_active_in_erp", {"project_id": "P1"}, active_projects={"P1"}).passed
    assert not run("project_active_in_erp", {"project_id": "P2"}, active_projects={"P1"}).passed
    assert run("project_active_in_erp", {"project_id": "P3"}, active_projects=lambda pid: pid == "P3").passed
    assert "no active ERP projects" in run("project_active_in_erp", {"project_id": "P1"}).message


def test_resource_known():
    assert run("resource_known", {"resource_id": "R1"}, known_resources={"R1"}).passed
    failed = run("resource_known", {"resource_id": "R9"}, known_resources={"R1"})
    assert not failed.passed and failed.actual == "R9"


def test_period_open_asks_the_period_calendar_of_the_entrys_legal_entity():
    def calendar(code, day):
        return code == "US01" and day.strftime("%Y-%m") == "2026-05"

    entry = {"legal_entity_code": "US01"}
    assert run("period_open", {**entry, "date": "2026-05-31"}, period_calendar=calendar).passed
    failed = run("period_open", {**entry, "date": "2026-04-30"}, period_calendar=calendar)
    assert not failed.passed and failed.actual == "2026-04" and "closed" in failed.message and "US01" in failed.message
    assert not run("period_open", {**entry, "date": "not a date"}, period_calendar=calendar).passed
    # no calendar given: the rule fails rather than guesses
    assert not run("period_open", {**entry, "date": "2026-05-31"}).passed


def test_required_fields_lists_every_missing_path():
    params = {"paths": ["project_id", "hours", "resource.id"]}
    assert run("required_fields", {"project_id": "P1", "hours": 0, "resource": {"id": "R1"}}, params).passed
    failed = run("required_fields", {"project_id": " ", "resource": {}}, params)
    assert not failed.passed and failed.actual == ["project_id", "hours", "resource.id"]
    assert failed.field == "project_id"


def test_amount_within_contract_remaining():
    remaining = {"K1": Decimal("1000")}.get
    assert run(
        "amount_within_contract_remaining", {"amount": "1000", "contract_id": "K1"}, contract_remaining=remaining
    ).passed
    failed = run(
        "amount_within_contract_remaining", {"amount": "1000.01", "contract_id": "K1"}, contract_remaining=remaining
    )
    assert not failed.passed and failed.expected == Decimal("1000")
    unknown = run(
        "amount_within_contract_remaining", {"amount": "1", "contract_id": "K2"}, contract_remaining=remaining
    )
    assert not unknown.passed and "unknown" in unknown.message


def test_not_billed_before():
    assert run("not_billed_before", {"milestone_id": "M2"}, billed_milestone_ids={"M1"}).passed
    failed = run("not_billed_before", {"milestone_id": "M1"}, billed_milestone_ids={"M1"})
    assert not failed.passed and "billed before" in failed.message


def test_client_accepted():
    assert run("client_accepted", {"client_acceptance": True}).passed
    assert run("client_accepted", {"client_acceptance": "accepted"}).passed
    assert not run("client_accepted", {"client_acceptance": 1}).passed
    assert not run("client_accepted", {"client_acceptance": "pending"}).passed
    assert not run("client_accepted", {}).passed


def test_max_amount():
    assert run("max_amount", {"amount": "500"}, {"max": 500}).passed
    failed = run("max_amount", {"amount": "500.01"}, {"max": 500})
    assert not failed.passed and failed.expected == Decimal("500")
    assert not run("max_amount", {"amount": "abc"}, {"max": 500}).passed


@pytest.mark.parametrize("name", ["entry_approved", "period_open", "max_amount"])
def test_rules_report_their_own_name(name):
    params = {"max": 1} if name == "max_amount" else {}
    assert run(name, {}, params).rule == name
