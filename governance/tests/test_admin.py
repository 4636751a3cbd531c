"""The governance admin: history and import-export together, validation in forms, roles, reasons on inline rows."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from import_export.admin import ImportExportMixin

from governance.admin import GovernanceAdmin
from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from governance.tests.factories import (
    CanonicalEntityFactory,
    ConnectedSystemFactory,
    LegalEntityFactory,
    RateCardFactory,
    RateCardLineFactory,
    policy_periodic_tasks,
)
from integrationhub.admin_base import HubHistoryAdmin

pytestmark = pytest.mark.django_db


def card_form(uk: LegalEntity, *, lines: list[dict] | None = None, initial: int = 0, **overrides) -> dict:
    data = {
        "name": "UK 2026",
        "legal_entity": uk.pk,
        "currency": "GBP",
        "tolerance_percent": "0",
        "valid_from": "2026-01-01",
        "valid_to": "",
        "client_ref": "",
        "contract_ref": "",
        "change_reason": "2026 price list",
        "lines-TOTAL_FORMS": str(len(lines or [])),
        "lines-INITIAL_FORMS": str(initial),
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        **overrides,
    }
    for index, line in enumerate(lines or []):
        data.update({f"lines-{index}-{key}": value for key, value in line.items()})
    return data


@pytest.fixture
def uk():
    return LegalEntityFactory(code="UK01")


def test_every_governance_admin_combines_import_export_with_history():
    for model in (LegalEntity, OwnershipRule, RateCard, SyncPolicy):
        model_admin = admin.site._registry[model]
        assert isinstance(model_admin, GovernanceAdmin) and isinstance(model_admin, HubHistoryAdmin)
        mro = type(model_admin).__mro__
        assert mro.index(ImportExportMixin) < mro.index(HubHistoryAdmin)


def test_change_list_shows_import_and_export_and_change_form_shows_history(client_as, uk):
    # given
    card = RateCardFactory(legal_entity=uk)
    client = client_as("analyst")

    # when
    changelist = client.get("/admin/governance/ratecard/").content.decode()
    change = client.get(f"/admin/governance/ratecard/{card.pk}/change/").content.decode()
    history = client.get(f"/admin/governance/ratecard/{card.pk}/history/")

    # then
    assert "/admin/governance/ratecard/import/" in changelist and "/admin/governance/ratecard/export/" in changelist
    assert f"/admin/governance/ratecard/{card.pk}/history/" in change
    assert history.status_code == 200


def test_auditor_sees_no_import_button_but_may_export(client_as, uk):
    changelist = client_as("auditor").get("/admin/governance/ratecard/").content.decode()
    assert "/import/" not in changelist and "/admin/governance/ratecard/export/" in changelist


def test_adding_a_card_with_lines_records_the_reason_on_card_and_lines(client_as, uk):
    # given
    client = client_as("analyst")
    lines = [{"role": "Manager", "bill_rate": "150", "cost_rate": "90", "unit": "hour"}]

    # when
    response = client.post("/admin/governance/ratecard/add/", card_form(uk, lines=lines))

    # then
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    card = RateCard.objects.get()
    line_history = RateCardLine.history.get()
    assert card.history.get().history_change_reason == "2026 price list"
    assert (line_history.history_change_reason, line_history.history_user.username) == (
        "2026 price list",
        "analyst-user",
    )


def test_changing_and_deleting_a_line_inline_records_the_reason(client_as, uk):
    # given
    card = RateCardFactory(legal_entity=uk)
    manager = RateCardLineFactory(rate_card=card, role="Manager", bill_rate=Decimal("150"))
    analyst = RateCardLineFactory(rate_card=card, role="Analyst", bill_rate=Decimal("80"))
    client = client_as("analyst")
    lines = [
        {
            "id": manager.pk,
            "rate_card": card.pk,
            "role": "Manager",
            "bill_rate": "160",
            "cost_rate": "90",
            "unit": "hour",
        },
        {
            "id": analyst.pk,
            "rate_card": card.pk,
            "role": "Analyst",
            "bill_rate": "80",
            "cost_rate": "90",
            "unit": "hour",
            "DELETE": "on",
        },
    ]

    # when
    response = client.post(
        f"/admin/governance/ratecard/{card.pk}/change/",
        card_form(uk, lines=lines, initial=2, name=card.name, change_reason="Manager rate up"),
    )

    # then
    assert response.status_code == 302
    assert list(card.lines.values_list("role", "bill_rate")) == [("Manager", Decimal("160.00"))]
    changed = RateCardLine.history.filter(id=manager.pk).latest()
    deleted = RateCardLine.history.filter(id=analyst.pk, history_type="-").get()
    assert changed.history_change_reason == deleted.history_change_reason == "Manager rate up"
    assert deleted.history_user.username == "analyst-user"


def test_admin_form_rejects_an_overlapping_card_naming_the_other(client_as, uk):
    # given
    existing = RateCardFactory(name="UK 2025-26", legal_entity=uk, valid_from=datetime.date(2025, 7, 1))
    client = client_as("analyst")

    # when
    response = client.post("/admin/governance/ratecard/add/", card_form(uk, name="Overlap"))

    # then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert f"#{existing.pk}" in errors["valid_from"][0] and "UK 2025-26" in errors["valid_from"][0]
    assert RateCard.objects.count() == 1


def test_admin_form_rejects_a_conflicting_ownership_rule_naming_both(client_as):
    # given
    entity = CanonicalEntityFactory(name="time_entry")
    erp, psa = ConnectedSystemFactory(slug="erp"), ConnectedSystemFactory(slug="psa")
    client = client_as("analyst")
    client.post(
        "/admin/governance/ownershiprule/add/",
        {"entity": entity.pk, "field_group": '["billing"]', "owning_system": erp.pk, "conflict_action": "exception",
         "change_reason": "ERP owns billing"},
    )  # fmt: skip
    first = OwnershipRule.objects.get()

    # when
    response = client.post(
        "/admin/governance/ownershiprule/add/",
        {"entity": entity.pk, "field_group": '["billing"]', "owning_system": psa.pk, "conflict_action": "ignore",
         "change_reason": "PSA owns billing"},
    )  # fmt: skip

    # then
    message = response.context["adminform"].form.errors["field_group"][0]
    assert f"rule #{first.pk} ({first})" in message and "billing" in message and "psa" in message.lower()
    assert OwnershipRule.objects.count() == 1


def test_sync_policy_admin_saves_through_the_service_and_keeps_the_schedule(client_as):
    # given
    client = client_as("analyst")
    form = {
        "name": "Nightly",
        "flow": "time_expense_to_erp",
        "active": "on",
        "trigger": "schedule",
        "cron": "0 2 * * *",
        "batch_size": 100,
        "max_attempts": 5,
        "backoff_base_seconds": 10,
        "backoff_cap_seconds": 3600,
        "jitter": "on",
        "timeout_seconds": 30,
        "validation_rules": '[{"rule": "entry_approved"}]',
        "dead_letter_threshold": 5,
        "change_reason": "nightly posting",
    }

    # when
    response = client.post("/admin/governance/syncpolicy/add/", form)

    # then
    assert response.status_code == 302
    policy = SyncPolicy.objects.get()
    assert policy.periodic_task.enabled and policy.history.get().history_change_reason == "nightly posting"
    assert policy.history.get().history_user.username == "analyst-user"

    # when: the cron is invalid
    response = client.post(f"/admin/governance/syncpolicy/{policy.pk}/change/", {**form, "cron": "0 2 * *"})

    # then
    assert "five fields" in response.context["adminform"].form.errors["cron"][0]
    assert policy.periodic_task.crontab.hour == "2"

    # when: deleted
    response = client.post(f"/admin/governance/syncpolicy/{policy.pk}/delete/", {"post": "yes"})

    # then
    assert response.status_code == 302 and policy_periodic_tasks().count() == 0


# --- roles: refused admin writes leave the database unchanged -----------------------------------------


def test_auditor_gets_403_on_admin_add_and_change_posts(client_as, uk):
    # given
    card = RateCardFactory(legal_entity=uk, name="Original")
    client = client_as("auditor")

    # when
    add = client.post("/admin/governance/ratecard/add/", card_form(uk, valid_from="2030-01-01"))
    change = client.post(f"/admin/governance/ratecard/{card.pk}/change/", card_form(uk, name="Changed"))
    entity_change = client.post(
        f"/admin/governance/legalentity/{uk.pk}/change/",
        {"code": "UK01", "name": "Renamed", "country": "GB", "base_currency": "GBP", "tax_jurisdiction": "GB",
         "region": "emea", "change_reason": "x"},
    )  # fmt: skip
    delete = client.post(f"/admin/governance/ratecard/{card.pk}/delete/", {"post": "yes"})

    # then
    assert (add.status_code, change.status_code, entity_change.status_code, delete.status_code) == (403, 403, 403, 403)
    assert list(RateCard.objects.values_list("name", flat=True)) == ["Original"]
    assert LegalEntity.objects.get().name == uk.name and RateCard.history.count() == 1


def test_auditor_can_view_the_change_form_and_history(client_as, uk):
    card = RateCardFactory(legal_entity=uk)
    client = client_as("auditor")
    assert client.get(f"/admin/governance/ratecard/{card.pk}/change/").status_code == 200
    assert client.get(f"/admin/governance/ratecard/{card.pk}/history/").status_code == 200


def test_analyst_cannot_add_or_change_legal_entities_in_admin(client_as, uk):
    # given
    client = client_as("analyst")
    form = {"code": "US01", "name": "US", "country": "US", "base_currency": "USD", "tax_jurisdiction": "US-NY",
            "region": "americas", "change_reason": "x"}  # fmt: skip

    # when
    add = client.post("/admin/governance/legalentity/add/", form)
    change = client.post(f"/admin/governance/legalentity/{uk.pk}/change/", {**form, "code": "UK01"})

    # then
    assert (add.status_code, change.status_code) == (403, 403)
    assert list(LegalEntity.objects.values_list("code", "name")) == [("UK01", uk.name)]


def test_analyst_may_change_a_rate_card_in_admin(client_as, uk):
    card = RateCardFactory(legal_entity=uk, name="Old")
    response = client_as("analyst").post(f"/admin/governance/ratecard/{card.pk}/change/", card_form(uk, name="New"))
    assert response.status_code == 302 and RateCard.objects.get().name == "New"
