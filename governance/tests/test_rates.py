"""Rate lookup precedence and validity edges, and the rate card rules enforced by clean()."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from governance import services
from governance.models import RateCard
from governance.selectors import rate_for
from governance.tests.factories import LegalEntityFactory, RateCardFactory, RateCardLineFactory
from integrationhub.errors import HubConflictError, HubNotFoundError

pytestmark = pytest.mark.django_db

D = datetime.date


def card_with_line(*, bill: str, role: str = "Manager", **card_fields) -> RateCard:
    card = RateCardFactory(**card_fields)
    RateCardLineFactory(rate_card=card, role=role, bill_rate=Decimal(bill), cost_rate=Decimal("50"))
    return card


@pytest.fixture
def uk():
    return LegalEntityFactory(code="UK01", base_currency="GBP")


@pytest.fixture
def three_levels(uk):
    # given: a default card, a client override and a contract override, all valid through May 2026
    return {
        "default": card_with_line(bill="100", legal_entity=uk, valid_from=D(2026, 1, 1), valid_to=D(2026, 5, 31)),
        "client": card_with_line(bill="110", legal_entity=uk, valid_from=D(2026, 1, 1), client_ref="ACME"),
        "contract": card_with_line(
            bill="120", legal_entity=uk, valid_from=D(2026, 3, 1), client_ref="ACME", contract_ref="K-1"
        ),
    }


def test_contract_card_beats_client_card_beats_entity_default(three_levels, uk):
    # when
    by_contract = rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 4, 1), client="ACME", contract="K-1")
    by_client = rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 4, 1), client="ACME")
    by_default = rate_for(legal_entity=uk, role="Manager", on_date=D(2026, 4, 1))

    # then
    assert (by_contract.bill_rate, by_contract.scope, by_contract.rate_card_id) == (
        Decimal("120"),
        "contract",
        three_levels["contract"].pk,
    )
    assert (by_client.bill_rate, by_client.scope) == (Decimal("110"), "client")
    assert (by_default.bill_rate, by_default.scope, by_default.currency) == (Decimal("100"), "entity", "GBP")


def test_unknown_client_or_contract_falls_back_to_the_entity_default(three_levels):
    quote = rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 4, 1), client="OTHER", contract="K-9")
    assert quote.scope == "entity" and quote.bill_rate == Decimal("100")


def test_contract_card_before_its_first_day_falls_back_to_the_client_card(three_levels):
    quote = rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 2, 28), client="ACME", contract="K-1")
    assert quote.scope == "client"


def test_override_without_the_role_falls_through_to_the_next_level(three_levels, uk):
    # given: only the default card lists Analyst
    RateCardLineFactory(rate_card=three_levels["default"], role="Analyst", bill_rate=Decimal("70"))

    # when
    quote = rate_for(legal_entity="UK01", role="Analyst", on_date=D(2026, 4, 1), client="ACME", contract="K-1")

    # then
    assert quote.scope == "entity" and quote.bill_rate == Decimal("70")


@pytest.mark.parametrize(
    ("on_date", "expected"),
    [
        (D(2025, 12, 31), None),  # the day before valid_from
        (D(2026, 1, 1), Decimal("100")),  # valid_from itself
        (D(2026, 5, 31), Decimal("100")),  # valid_to itself
        (D(2026, 6, 1), Decimal("200")),  # the day after valid_to: the next card
    ],
)
def test_validity_edges_are_inclusive_and_the_day_after_uses_the_next_card(uk, on_date, expected):
    # given: one card for Jan to May, the next from June, open-ended
    card_with_line(bill="100", legal_entity=uk, valid_from=D(2026, 1, 1), valid_to=D(2026, 5, 31))
    card_with_line(bill="200", legal_entity=uk, valid_from=D(2026, 6, 1), valid_to=None)

    # when / then
    if expected is None:
        with pytest.raises(HubNotFoundError):
            rate_for(legal_entity="UK01", role="Manager", on_date=on_date)
    else:
        assert rate_for(legal_entity="UK01", role="Manager", on_date=on_date).bill_rate == expected


def test_open_ended_card_applies_far_in_the_future(uk):
    card_with_line(bill="100", legal_entity=uk, valid_from=D(2026, 1, 1))
    assert rate_for(legal_entity="UK01", role="Manager", on_date=D(2099, 12, 31)).bill_rate == Decimal("100")


def test_no_card_raises_not_found_naming_entity_role_and_date(uk):
    # given
    card_with_line(bill="100", legal_entity=uk, valid_from=D(2026, 1, 1))

    # when
    with pytest.raises(HubNotFoundError) as caught:
        rate_for(legal_entity="UK01", role="Partner", on_date=D(2026, 3, 4), client="ACME")

    # then
    assert "UK01" in caught.value.detail and "'Partner'" in caught.value.detail and "2026-03-04" in caught.value.detail


def test_unknown_legal_entity_raises_not_found():
    with pytest.raises(HubNotFoundError, match="XX99"):
        rate_for(legal_entity="XX99", role="Manager", on_date=D(2026, 1, 1))


def test_several_currencies_prefer_the_base_currency_or_the_one_asked_for(uk):
    card_with_line(bill="100", legal_entity=uk, currency="GBP")
    card_with_line(bill="130", legal_entity=uk, currency="EUR")
    assert rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 2, 1)).currency == "GBP"
    assert rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 2, 1), currency="EUR").bill_rate == Decimal(
        "130"
    )


def test_several_foreign_currencies_without_a_base_currency_card_is_a_conflict(uk):
    card_with_line(bill="100", legal_entity=uk, currency="USD")
    card_with_line(bill="130", legal_entity=uk, currency="EUR")
    with pytest.raises(HubConflictError):
        rate_for(legal_entity="UK01", role="Manager", on_date=D(2026, 2, 1))


def test_overlapping_card_of_the_same_scope_is_rejected_naming_the_other_card(uk):
    # given
    existing = RateCardFactory(name="UK 2026", legal_entity=uk, valid_from=D(2026, 1, 1), valid_to=D(2026, 6, 30))
    new = RateCard(name="UK mid-year", legal_entity=uk, currency="GBP", valid_from=D(2026, 6, 30))

    # when
    with pytest.raises(ValidationError) as caught:
        services.rate_card_save(rate_card=new)

    # then
    message = caught.value.message_dict["valid_from"][0]
    assert f"#{existing.pk}" in message and "UK 2026" in message and "2026-01-01 to 2026-06-30" in message
    assert RateCard.objects.count() == 1


def test_open_ended_existing_card_overlaps_any_later_card(uk):
    RateCardFactory(name="Open", legal_entity=uk, valid_from=D(2026, 1, 1), valid_to=None)
    new = RateCard(name="Later", legal_entity=uk, currency="GBP", valid_from=D(2030, 1, 1), valid_to=D(2030, 2, 1))
    with pytest.raises(ValidationError, match="open-ended"):
        new.full_clean()


def test_adjacent_cards_and_other_scopes_or_currencies_do_not_overlap(uk):
    RateCardFactory(legal_entity=uk, valid_from=D(2026, 1, 1), valid_to=D(2026, 6, 30))
    for card in [
        RateCard(name="next", legal_entity=uk, currency="GBP", valid_from=D(2026, 7, 1)),
        RateCard(name="usd", legal_entity=uk, currency="USD", valid_from=D(2026, 1, 1)),
        RateCard(name="client", legal_entity=uk, currency="GBP", valid_from=D(2026, 1, 1), client_ref="ACME"),
        RateCard(
            name="other entity", legal_entity=LegalEntityFactory(code="US01"), currency="GBP", valid_from=D(2026, 1, 1)
        ),
    ]:
        services.rate_card_save(rate_card=card)
    assert RateCard.objects.count() == 5


def test_card_may_be_saved_again_without_overlapping_itself(uk):
    card = RateCardFactory(legal_entity=uk)
    card.name = "renamed"
    services.rate_card_save(rate_card=card)
    assert RateCard.objects.get(pk=card.pk).name == "renamed"


def test_valid_to_before_valid_from_is_rejected(uk):
    card = RateCard(name="bad", legal_entity=uk, currency="GBP", valid_from=D(2026, 2, 1), valid_to=D(2026, 1, 31))
    with pytest.raises(ValidationError) as caught:
        card.full_clean()
    assert "valid_to" in caught.value.message_dict


def test_contract_override_needs_its_client(uk):
    card = RateCard(name="bad", legal_entity=uk, currency="GBP", valid_from=D(2026, 2, 1), contract_ref="K-1")
    with pytest.raises(ValidationError) as caught:
        card.full_clean()
    assert "client_ref" in caught.value.message_dict


def test_rate_card_save_replaces_lines_by_role_and_reports_line_errors_by_index(uk):
    # given
    card = services.rate_card_save(
        rate_card=RateCard(name="c", legal_entity=uk, currency="GBP", valid_from=D(2026, 1, 1)),
        lines=[
            {"role": "Manager", "bill_rate": "150", "cost_rate": "90"},
            {"role": "Analyst", "bill_rate": "80", "cost_rate": "40"},
        ],
    )

    # when: one line has a negative rate
    with pytest.raises(ValidationError) as caught:
        services.rate_card_save(
            rate_card=card,
            lines=[
                {"role": "Manager", "bill_rate": "155", "cost_rate": "90"},
                {"role": "Partner", "bill_rate": "-1", "cost_rate": "1"},
            ],
        )

    # then: the error names the line, and nothing changed
    assert "lines[1].bill_rate" in caught.value.message_dict
    assert sorted(card.lines.values_list("role", "bill_rate")) == [
        ("Analyst", Decimal("80")),
        ("Manager", Decimal("150")),
    ]

    # when: a valid replacement
    services.rate_card_save(rate_card=card, lines=[{"role": "Manager", "bill_rate": "155", "cost_rate": "90"}])

    # then
    assert list(card.lines.values_list("role", "bill_rate")) == [("Manager", Decimal("155"))]
