"""The time and expense rules: each refusing and passing, and the period calendar behind period_open."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from governance.choices import PeriodStatus
from governance.models import AccountingPeriod, LegalEntity, RateCard
from governance.rules import RuleContext, rule_entries_validate, rule_get, rules_evaluate
from governance.selectors import accounting_period_is_open, rate_for
from governance.services import accounting_period_save, rate_card_save

DAY = datetime.date(2026, 11, 12)


def run(name: str, record: dict, params: dict | None = None, **context):
    return rule_get(name).run(record, params or {}, RuleContext(**context))


def test_daily_hours_within_limit_counts_the_persons_other_entries_of_the_day():
    # given 8 hours already booked by the person that day, and a limit of 10
    calls = []

    def booked(resource, day, own):
        calls.append((resource, day, own))
        return Decimal("8")

    entry = {"id": "te-1", "resource_id": "res-1", "date": DAY.isoformat(), "hours": 2}

    # when / then: 8 + 2 is within the limit, 8 + 3 is not
    assert run("daily_hours_within_limit", entry, {"max_hours": 10}, hours_booked=booked).passed
    failed = run("daily_hours_within_limit", {**entry, "hours": 3}, {"max_hours": 10}, hours_booked=booked)
    assert not failed.passed
    assert (failed.rule, failed.field, failed.expected, failed.actual) == (
        "daily_hours_within_limit",
        "hours",
        Decimal("10"),
        Decimal("11"),
    )
    assert "res-1" in failed.message and "11" in failed.message
    # the entry's own earlier versions are excluded by its id
    assert calls[0] == ("res-1", DAY, "te-1")


def test_daily_hours_within_limit_fails_without_its_lookup_or_hours():
    entry = {"id": "te-1", "resource_id": "res-1", "date": DAY.isoformat(), "hours": 2}
    assert not run("daily_hours_within_limit", entry).passed
    assert not run("daily_hours_within_limit", {**entry, "hours": "lots"}, hours_booked=lambda *a: 0).passed


def test_receipt_required_above_the_amount():
    # given an expense threshold of 25
    params = {"amount": 25}

    # when / then: small expenses need no receipt, larger ones do
    assert run("receipt_required_above", {"amount": "20.00"}, params).passed
    assert run("receipt_required_above", {"amount": "80.00", "receipt_url": "https://files/r.pdf"}, params).passed
    failed = run("receipt_required_above", {"amount": "80.00"}, params)
    assert not failed.passed
    assert (failed.field, failed.expected, failed.actual) == ("receipt_url", "a receipt", None)
    assert "80.00" in failed.message


def test_currency_matches_entity():
    # given a legal entity booking in USD only
    currencies = {"US01": ["USD"]}

    def lookup(code, day):
        return currencies.get(code, [])

    entry = {"currency": "USD", "legal_entity_code": "US01", "date": DAY.isoformat()}

    # when / then
    assert run("currency_matches_entity", entry, entity_currencies=lookup).passed
    failed = run("currency_matches_entity", {**entry, "currency": "EUR"}, entity_currencies=lookup)
    assert not failed.passed
    assert (failed.field, failed.expected, failed.actual) == ("currency", ["USD"], "EUR")
    assert not run("currency_matches_entity", entry).passed  # no lookup: it fails rather than guesses


def test_period_open_reads_the_calendar_of_the_entrys_legal_entity():
    # given a calendar where only US01's days are open
    def calendar(code, day):
        return code == "US01"

    entry = {"date": DAY.isoformat(), "legal_entity_code": "US01"}

    # when / then
    assert run("period_open", entry, period_calendar=calendar).passed
    failed = run("period_open", {**entry, "legal_entity_code": "UK01"}, period_calendar=calendar)
    assert not failed.passed
    assert (failed.field, failed.expected, failed.actual) == ("date", "an open period", "2026-11")
    assert not run("period_open", {"date": DAY.isoformat()}, period_calendar=calendar).passed


def test_rule_entries_can_be_limited_to_entities():
    # given a rate rule limited to time entries
    entries = [{"rule": "receipt_required_above", "params": {"amount": 10}, "entities": ["expense"]}]
    assert rule_entries_validate(entries) == []
    assert rule_entries_validate([{"rule": "max_amount", "params": {"max": 1}, "entities": "expense"}])

    # when an expense and a time entry are checked
    on_expense = rules_evaluate(record={"amount": 50}, entries=entries, context=RuleContext(), entity="expense")
    on_time = rules_evaluate(record={"amount": 50}, entries=entries, context=RuleContext(), entity="time_entry")

    # then only the expense is checked
    assert [result.passed for result in on_expense] == [False]
    assert on_time == []


@pytest.fixture
def us01(db):
    return LegalEntity.objects.create(
        code="US01",
        name="Northwind Inc.",
        country="US",
        base_currency="USD",
        tax_jurisdiction="US-NY",
        region="americas",
    )


def test_accounting_periods_answer_open_or_closed_per_legal_entity(us01):
    # given an open November and a closed October for US01
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=us01, start_date=datetime.date(2026, 11, 1), end_date=datetime.date(2026, 11, 30)
        ),
        reason="test",
    )
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=us01,
            start_date=datetime.date(2026, 10, 1),
            end_date=datetime.date(2026, 10, 31),
            status=PeriodStatus.CLOSED,
        ),
        reason="closing October",
    )

    # when / then
    assert accounting_period_is_open(legal_entity="US01", on_date=DAY)
    assert not accounting_period_is_open(legal_entity="US01", on_date=datetime.date(2026, 10, 15))
    assert not accounting_period_is_open(legal_entity="US01", on_date=datetime.date(2026, 12, 1))  # no period yet
    assert not accounting_period_is_open(legal_entity="UK01", on_date=DAY)
    november = AccountingPeriod.objects.get(start_date=datetime.date(2026, 11, 1))
    assert november.name == "2026-11"
    assert november.history.first().history_change_reason == "test"


def test_an_overlapping_period_is_refused(us01):
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=us01, start_date=datetime.date(2026, 11, 1), end_date=datetime.date(2026, 11, 30)
        ),
        reason="test",
    )
    with pytest.raises(ValidationError) as caught:
        accounting_period_save(
            period=AccountingPeriod(
                legal_entity=us01, start_date=datetime.date(2026, 11, 15), end_date=datetime.date(2026, 12, 15)
            ),
            reason="test",
        )
    assert "start_date" in caught.value.message_dict
    assert AccountingPeriod.objects.count() == 1


def test_rate_matches_card_uses_the_client_override(us01):
    # given a default card (160) and a client override (150) for consultants
    start = datetime.date(2026, 1, 1)
    rate_card_save(
        rate_card=RateCard(name="default", legal_entity=us01, currency="USD", valid_from=start),
        lines=[{"role": "Consultant", "bill_rate": 160, "cost_rate": 70, "unit": "hour"}],
        reason="test",
    )
    rate_card_save(
        rate_card=RateCard(name="acme", legal_entity=us01, currency="USD", valid_from=start, client_ref="client-acme"),
        lines=[{"role": "Consultant", "bill_rate": 150, "cost_rate": 70, "unit": "hour"}],
        reason="test",
    )
    params = {
        "role_field": "role_code",
        "legal_entity_field": "legal_entity_code",
        "client_field": "custom_fields.client",
    }
    entry = {"rate": "150", "role_code": "Consultant", "date": DAY.isoformat(), "legal_entity_code": "US01"}

    # when / then: 150 is right for the client, wrong for the entity default
    assert run(
        "rate_matches_card", {**entry, "custom_fields": {"client": "client-acme"}}, params, rate_lookup=rate_for
    ).passed
    failed = run("rate_matches_card", entry, params, rate_lookup=rate_for)
    assert not failed.passed
    assert (failed.expected, failed.actual) == (Decimal("160.00"), Decimal("150"))
