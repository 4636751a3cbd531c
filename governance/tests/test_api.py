"""The governance API: writes through services, clean() errors as problem+json, roles, history and the rate lookup."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest

from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from governance.tests.factories import (
    CanonicalEntityFactory,
    ConnectedSystemFactory,
    LegalEntityFactory,
    OwnershipRuleFactory,
    RateCardFactory,
    RateCardLineFactory,
    SyncPolicyFactory,
    policy_periodic_tasks,
)

pytestmark = pytest.mark.django_db


def send(client, method: str, url: str, body: dict | None = None, **headers):
    return getattr(client, method)(url, data=json.dumps(body or {}), content_type="application/json", headers=headers)


@pytest.fixture
def uk():
    return LegalEntityFactory(code="UK01")


def card_body(**overrides) -> dict:
    return {
        "name": "UK 2026",
        "legal_entity": "UK01",
        "currency": "GBP",
        "valid_from": "2026-01-01",
        "valid_to": None,
        "tolerance_percent": "2.00",
        "lines": [
            {"role": "Manager", "bill_rate": "150.00", "cost_rate": "90.00", "unit": "hour"},
            {"role": "Analyst", "bill_rate": "80.00", "cost_rate": "40.00", "unit": "hour"},
        ],
        **overrides,
    }


def test_analyst_creates_a_rate_card_with_lines_and_history_carries_user_and_header_reason(client_as, uk):
    # given
    client = client_as("analyst")

    # when
    response = send(client, "post", "/api/v1/rate-cards/", card_body(), **{"X-Change-Reason": "2026 price list"})

    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["scope"] == "entity default" and {line["role"] for line in body["lines"]} == {"Manager", "Analyst"}
    card = RateCard.objects.get()
    history = card.history.get()
    assert history.history_user.username == "analyst-user" and history.history_change_reason == "2026 price list"
    assert {h.history_change_reason for h in RateCardLine.history.all()} == {"2026 price list"}


def test_update_without_header_uses_the_default_reason_and_replaces_lines(client_as, uk):
    # given
    client = client_as("analyst")
    card_id = send(client, "post", "/api/v1/rate-cards/", card_body()).json()["id"]

    # when
    body = card_body(lines=[{"role": "Manager", "bill_rate": "155.00", "cost_rate": "90.00", "unit": "hour"}])
    response = send(client, "put", f"/api/v1/rate-cards/{card_id}/", body)

    # then
    assert response.status_code == 200, response.content
    assert [(line["role"], line["bill_rate"]) for line in response.json()["lines"]] == [("Manager", "155.00")]
    assert RateCard.objects.get().history.latest().history_change_reason == "changed through the API"


def test_overlapping_rate_card_is_a_problem_json_with_the_field_and_nothing_is_stored(client_as, uk):
    # given
    existing = RateCardFactory(name="UK 2026", legal_entity=uk, valid_from=datetime.date(2025, 7, 1))
    client = client_as("analyst")

    # when
    response = send(client, "post", "/api/v1/rate-cards/", card_body(name="Overlap"))

    # then
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    problem = response.json()
    [error] = problem["errors"]
    assert error["field"] == "valid_from" and f"#{existing.pk}" in error["message"] and "UK 2026" in error["message"]
    assert RateCard.objects.count() == 1 and RateCardLine.objects.count() == 0


def test_line_errors_name_the_line(client_as, uk):
    client = client_as("analyst")
    body = card_body(
        lines=[
            {"role": "Manager", "bill_rate": "1", "cost_rate": "1"},
            {"role": "Manager", "bill_rate": "2", "cost_rate": "1"},
        ]
    )
    response = send(client, "post", "/api/v1/rate-cards/", body)
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["lines[1].role"]
    assert RateCard.objects.count() == 0


def test_rate_lookup_applies_precedence(client_as, uk):
    # given
    default = RateCardFactory(legal_entity=uk)
    RateCardLineFactory(rate_card=default, role="Manager", bill_rate=Decimal("150"))
    client_card = RateCardFactory(legal_entity=uk, client_ref="ACME")
    RateCardLineFactory(rate_card=client_card, role="Manager", bill_rate=Decimal("140"))
    client = client_as("auditor")

    # when
    by_client = client.get(
        "/api/v1/rate-cards/lookup/?legal_entity=UK01&role=Manager&date=2026-05-01&client=ACME&contract="
    )
    by_default = client.get(
        "/api/v1/rate-cards/lookup/?legal_entity=UK01&role=Manager&date=2026-05-01&client=&contract="
    )

    # then
    assert (
        by_client.status_code == 200
        and by_client.json()["bill_rate"] == "140.00"
        and by_client.json()["scope"] == "client"
    )
    assert by_default.json()["rate_card_id"] == default.pk and by_default.json()["scope"] == "entity"


def test_rate_lookup_errors(client_as, uk):
    client = client_as("auditor")
    missing = client.get("/api/v1/rate-cards/lookup/?legal_entity=UK01")
    assert missing.status_code == 422 and {e["field"] for e in missing.json()["errors"]} == {"role", "date"}
    assert client.get("/api/v1/rate-cards/lookup/?legal_entity=UK01&role=M&date=May").status_code == 422
    not_found = client.get("/api/v1/rate-cards/lookup/?legal_entity=UK01&role=Partner&date=2026-05-01")
    assert not_found.status_code == 404 and "Partner" in not_found.json()["detail"]


def test_rate_card_filters(client_as, uk):
    RateCardFactory(legal_entity=uk, valid_from=datetime.date(2026, 1, 1), valid_to=datetime.date(2026, 6, 30))
    later = RateCardFactory(legal_entity=uk, valid_from=datetime.date(2026, 7, 1))
    client = client_as("auditor")
    response = client.get("/api/v1/rate-cards/?legal_entity=UK01&valid_on=2026-07-01")
    assert [card["id"] for card in response.json()["results"]] == [later.pk]


def test_ownership_rule_conflict_comes_back_naming_both_rules(client_as):
    # given
    CanonicalEntityFactory(name="time_entry")
    ConnectedSystemFactory(slug="erp")
    ConnectedSystemFactory(slug="psa")
    existing = OwnershipRuleFactory(entity__name="time_entry", owning_system__slug="erp", field_group=["billing"])
    client = client_as("analyst")

    # when
    response = send(
        client,
        "post",
        "/api/v1/ownership-rules/",
        {"entity": "time_entry", "field_group": ["billing.method"], "owning_system": "psa"},
    )

    # then
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (
        error["field"] == "field_group"
        and f"#{existing.pk}" in error["message"]
        and "billing.method" in error["message"]
    )
    assert OwnershipRule.objects.count() == 1


def test_sync_policy_api_validates_and_keeps_the_schedule(client_as):
    # given
    client = client_as("analyst")
    body = {"name": "Nightly", "flow": "time_expense_to_erp", "trigger": "schedule", "cron": "0 2 * * *"}

    # when: invalid params for a rule
    bad = send(client, "post", "/api/v1/sync-policies/", {**body, "validation_rules": [{"rule": "max_amount"}]})

    # then
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "validation_rules"
    assert SyncPolicy.objects.count() == 0 and policy_periodic_tasks().count() == 0

    # when
    created = send(client, "post", "/api/v1/sync-policies/", body)

    # then
    assert created.status_code == 201, created.content
    assert policy_periodic_tasks().get(pk=created.json()["periodic_task"]).enabled

    # when
    send(client, "patch", f"/api/v1/sync-policies/{created.json()['id']}/", {"trigger": "manual"})
    # then
    assert policy_periodic_tasks().count() == 0

    # when
    deleted = client.delete(f"/api/v1/sync-policies/{created.json()['id']}/", headers={"X-Change-Reason": "retired"})
    # then
    assert deleted.status_code == 204 and SyncPolicy.objects.count() == 0
    assert SyncPolicy.history.filter(history_type="-").get().history_change_reason == "retired"


def test_deleting_a_legal_entity_in_use_is_a_conflict(client_as, uk):
    RateCardFactory(legal_entity=uk)
    response = client_as("integration_admin").delete(f"/api/v1/legal-entities/{uk.pk}/")
    assert response.status_code == 409 and "still used by" in response.json()["detail"]
    assert LegalEntity.objects.filter(pk=uk.pk).exists()


# --- roles: a refused write leaves the database unchanged ---------------------------------------------


def test_auditor_may_read_but_gets_403_on_every_write(client_as, uk):
    # given
    card = RateCardFactory(legal_entity=uk, name="Original")
    policy = SyncPolicyFactory(name="Original policy")
    client = client_as("auditor")

    # when / then
    assert client.get("/api/v1/rate-cards/").status_code == 200
    assert send(client, "post", "/api/v1/rate-cards/", card_body(valid_from="2030-01-01")).status_code == 403
    assert send(client, "put", f"/api/v1/rate-cards/{card.pk}/", card_body(name="Changed")).status_code == 403
    assert send(client, "patch", f"/api/v1/sync-policies/{policy.pk}/", {"name": "Changed"}).status_code == 403
    assert client.delete(f"/api/v1/rate-cards/{card.pk}/").status_code == 403
    assert client.delete(f"/api/v1/legal-entities/{uk.pk}/").status_code == 403

    # then: nothing changed
    assert list(RateCard.objects.values_list("name", flat=True)) == ["Original"]
    assert SyncPolicy.objects.get().name == "Original policy" and LegalEntity.objects.count() == 1
    assert RateCard.history.count() == 1


def test_analyst_edits_rate_cards_policies_and_ownership_but_not_legal_entities(client_as, uk):
    # given
    client = client_as("analyst")
    CanonicalEntityFactory(name="project")
    ConnectedSystemFactory(slug="crm")

    # when / then: allowed
    assert send(client, "post", "/api/v1/rate-cards/", card_body()).status_code == 201
    assert send(client, "post", "/api/v1/sync-policies/", {"name": "p", "flow": "client_master"}).status_code == 201
    rule = {"entity": "project", "field_group": [], "owning_system": "crm"}
    assert send(client, "post", "/api/v1/ownership-rules/", rule).status_code == 201

    # when / then: refused, and the entity is unchanged
    le_body = {
        "code": "US01",
        "name": "US",
        "country": "US",
        "base_currency": "USD",
        "tax_jurisdiction": "US-NY",
        "region": "americas",
    }
    assert send(client, "post", "/api/v1/legal-entities/", le_body).status_code == 403
    assert send(client, "patch", f"/api/v1/legal-entities/{uk.pk}/", {"name": "Renamed"}).status_code == 403
    assert client.delete(f"/api/v1/legal-entities/{uk.pk}/").status_code == 403
    assert list(LegalEntity.objects.values_list("code", "name")) == [("UK01", uk.name)]


def test_finance_approver_cannot_edit_rate_cards(client_as, uk):
    client = client_as("finance_approver")
    assert send(client, "post", "/api/v1/rate-cards/", card_body()).status_code == 403
    assert RateCard.objects.count() == 0


def test_integration_admin_manages_legal_entities(client_as):
    client = client_as("integration_admin")
    body = {
        "code": "US01",
        "name": "US",
        "country": "US",
        "base_currency": "USD",
        "tax_jurisdiction": "US-NY",
        "region": "americas",
    }
    assert send(client, "post", "/api/v1/legal-entities/", body).status_code == 201
    bad = send(client, "post", "/api/v1/legal-entities/", {**body, "code": "de01", "country": "DEU"})
    assert bad.status_code == 400 and {"code", "country"} <= {e["field"] for e in bad.json()["errors"]}
    assert LegalEntity.objects.count() == 1
