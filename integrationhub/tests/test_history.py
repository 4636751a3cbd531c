"""history_diff and the admin history pages of HubHistoryAdmin: compare, changed-fields summary, no revert for auditors.

The tests mount their own AdminSite (this module is the URLconf) so they do not depend on which app admins
are registered yet; every HubHistoryAdmin gets the same views.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import path, reverse

from connectors.models import ConnectedSystem
from governance.models import LegalEntity, RateCard
from integrationhub.admin_base import HubHistoryAdmin
from integrationhub.errors import HubNotFoundError
from integrationhub.history import history_diff, history_secret_fields

site = admin.AdminSite(name="admin")
site.register(LegalEntity, HubHistoryAdmin)
site.register(RateCard, HubHistoryAdmin)
site.register(ConnectedSystem, HubHistoryAdmin)
urlpatterns = [path("admin/", site.urls)]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

SECRET_TOKEN = "tok-VERY-secret-0001"
SECRET_WEBHOOK = "whsec-VERY-secret-0002"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    # The manifest storage needs collectstatic; admin pages rendered in tests only need URLs.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def save_as(obj: Any, user: Any, reason: str) -> Any:
    obj._history_user = user
    obj._change_reason = reason
    obj.save()
    return obj


def entity(code: str, name: str) -> LegalEntity:
    return LegalEntity.objects.create(
        code=code, name=name, country=code[:2], base_currency="GBP", tax_jurisdiction=code[:2], region="emea"
    )


@pytest.fixture
def rate_card_history(make_role_user) -> dict[str, Any]:
    """A rate card created by an analyst and changed twice: tolerance 5.00 → 7.50, then legal entity UK01 → IE01."""
    analyst = make_role_user("analyst", username="ana.lyst")
    uk, ie = entity("UK01", "Firm UK Ltd"), entity("IE01", "Firm Ireland Ltd")
    card = RateCard(
        name="UK standard 2025",
        legal_entity=uk,
        currency="GBP",
        valid_from=datetime.date(2025, 1, 1),
        tolerance_percent=Decimal("5.00"),
    )
    save_as(card, analyst, "new card for 2025")
    card.tolerance_percent = Decimal("7.50")
    save_as(card, analyst, "FIN-42 wider tolerance agreed with finance")
    card.legal_entity = ie
    save_as(card, analyst, "moved to the Irish entity")
    created, widened, moved = card.history.order_by("history_date")
    return {"card": card, "analyst": analyst, "created": created, "widened": widened, "moved": moved}


def compare_url(obj: Any, from_id: int, to_id: int) -> str:
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_history_compare", args=[obj.pk])
    return f"{url}?from={from_id}&to={to_id}"


def test_history_diff_lists_only_changed_fields_with_who_when_why(rate_card_history):
    # given a card whose tolerance changed between its first and second version
    card, created, widened = rate_card_history["card"], rate_card_history["created"], rate_card_history["widened"]

    # when
    diff = history_diff(
        model_admin_or_model=RateCard, obj=card, from_history_id=created.history_id, to_history_id=widened.history_id
    )

    # then only the tolerance is reported, with old and new value and both versions' who/when/why
    assert diff.changed_fields == ["tolerance_percent"]
    change = diff.changes[0]
    assert (change.verbose_name, change.old, change.new) == ("Tolerance percent", "5.00", "7.50")
    assert diff.from_version.user == "ana.lyst"
    assert diff.from_version.reason == "new card for 2025"
    assert diff.from_version.history_type_label == "created"
    assert diff.to_version.reason == "FIN-42 wider tolerance agreed with finance"
    assert diff.to_version.history_type_label == "changed"
    assert diff.to_version.history_date == widened.history_date


def test_history_diff_spans_several_versions_and_renders_foreign_keys_as_str(rate_card_history):
    # given a card changed twice (tolerance, then legal entity)
    card, created, moved = rate_card_history["card"], rate_card_history["created"], rate_card_history["moved"]

    # when comparing the first with the last version, through the ModelAdmin
    diff = history_diff(
        model_admin_or_model=HubHistoryAdmin(RateCard, site),
        obj=card,
        from_history_id=created.history_id,
        to_history_id=moved.history_id,
    )

    # then both changes appear, in model field order, and the FK reads as the entities' str()
    assert diff.changed_fields == ["legal_entity", "tolerance_percent"]
    legal_entity = diff.changes[0]
    assert legal_entity.verbose_name == "Legal entity"
    uk, ie = LegalEntity.objects.get(code="UK01"), LegalEntity.objects.get(code="IE01")
    assert (legal_entity.old, legal_entity.new) == (str(uk), str(ie))
    assert str(uk).startswith("UK01") and str(ie).startswith("IE01")


def test_history_diff_of_identical_versions_is_empty(rate_card_history):
    card, widened = rate_card_history["card"], rate_card_history["widened"]

    diff = history_diff(
        model_admin_or_model=RateCard, obj=card, from_history_id=widened.history_id, to_history_id=widened.history_id
    )

    assert diff.changes == []


def test_history_diff_rejects_a_version_of_another_record(rate_card_history, make_role_user):
    # given a second card with its own history
    card = rate_card_history["card"]
    other = save_as(
        RateCard(name="Other", legal_entity=card.legal_entity, currency="EUR", valid_from=datetime.date(2025, 1, 1)),
        rate_card_history["analyst"],
        "other card",
    )

    # when / then: a version of the other card cannot be compared as a version of this one
    with pytest.raises(HubNotFoundError):
        history_diff(
            model_admin_or_model=RateCard,
            obj=card,
            from_history_id=rate_card_history["created"].history_id,
            to_history_id=other.history.latest().history_id,
        )


@pytest.fixture
def system_with_secrets(make_role_user) -> dict[str, Any]:
    """A connected system whose credentials, webhook secret and base URL changed in one save."""
    admin_user = make_role_user("integration_admin", username="ia.admin")
    system = ConnectedSystem(
        name="Salesforce prod",
        slug="salesforce-prod",
        role="crm",
        connector_type="salesforce",
        base_url="https://crm.example.com",
        credentials={"token": "tok-old-0000"},
        webhook_secret="whsec-old-0000",
    )
    save_as(system, admin_user, "registered")
    system.credentials = {"token": SECRET_TOKEN}
    system.webhook_secret = SECRET_WEBHOOK
    system.base_url = "https://crm2.example.com"
    save_as(system, admin_user, "rotated credentials and moved host")
    first, second = system.history.order_by("history_date")
    return {"system": system, "first": first, "second": second}


def test_history_diff_never_includes_secret_fields(system_with_secrets):
    system, first, second = system_with_secrets["system"], system_with_secrets["first"], system_with_secrets["second"]

    diff = history_diff(
        model_admin_or_model=ConnectedSystem,
        obj=system,
        from_history_id=first.history_id,
        to_history_id=second.history_id,
    )

    assert {"credentials", "webhook_secret"} <= history_secret_fields(model_admin_or_model=ConnectedSystem)
    assert diff.changed_fields == ["base_url"]
    rendered = repr(diff)
    assert SECRET_TOKEN not in rendered and SECRET_WEBHOOK not in rendered and "tok-old" not in rendered


def test_history_diff_renders_many_to_many_as_related_names(system_with_secrets):
    # given a system that gains a legal entity
    system = system_with_secrets["system"]
    before = system.history.latest()
    uk = entity("UK01", "Firm UK Ltd")
    system.legal_entities.add(uk)
    after = system.history.latest()
    assert after.history_id != before.history_id

    # when
    diff = history_diff(
        model_admin_or_model=ConnectedSystem,
        obj=system,
        from_history_id=before.history_id,
        to_history_id=after.history_id,
    )

    # then
    assert diff.changed_fields == ["legal_entities"]
    assert (diff.changes[0].old, diff.changes[0].new) == ("—", str(uk))


def test_compare_page_and_history_list_never_show_secrets(system_with_secrets, client_as):
    # given an integration admin (full rights) looking at the system's history
    client = client_as("integration_admin")
    system, first, second = system_with_secrets["system"], system_with_secrets["first"], system_with_secrets["second"]

    # when
    history_page = client.get(reverse("admin:connectors_connectedsystem_history", args=[system.pk]))
    compare_page = client.get(compare_url(system, first.history_id, second.history_id))

    # then
    assert history_page.status_code == 200 and compare_page.status_code == 200
    for page in (history_page, compare_page):
        content = page.content.decode()
        assert SECRET_TOKEN not in content and SECRET_WEBHOOK not in content
        assert "tok-old-0000" not in content and "whsec-old-0000" not in content
    assert "https://crm2.example.com" in compare_page.content.decode()


def test_auditor_can_open_the_compare_page(rate_card_history, client_as):
    # given
    card, created, widened = rate_card_history["card"], rate_card_history["created"], rate_card_history["widened"]
    client = client_as("auditor")

    # when
    response = client.get(compare_url(card, created.history_id, widened.history_id))

    # then who, when, why and the changed field are shown
    assert response.status_code == 200
    content = response.content.decode()
    assert "ana.lyst" in content
    assert "FIN-42 wider tolerance agreed with finance" in content
    assert 'data-field="tolerance_percent"' in content
    assert "5.00" in content and "7.50" in content
    assert 'data-field="legal_entity"' not in content
    assert response.context["diff"].changed_fields == ["tolerance_percent"]


def test_user_without_permissions_gets_403_on_compare_and_history(rate_card_history, client):
    # given a staff user in no role group
    card, created, widened = rate_card_history["card"], rate_card_history["created"], rate_card_history["widened"]
    client.force_login(get_user_model().objects.create_user(username="nobody", password="pw-123456789", is_staff=True))

    # when / then
    assert client.get(compare_url(card, created.history_id, widened.history_id)).status_code == 403
    assert client.get(reverse("admin:governance_ratecard_history", args=[card.pk])).status_code == 403


def test_compare_rejects_versions_of_another_record_with_404(rate_card_history, client_as):
    card = rate_card_history["card"]
    client = client_as("auditor")

    response = client.get(compare_url(card, rate_card_history["created"].history_id, 999_999))

    assert response.status_code == 404


def test_compare_without_versions_redirects_back_to_history(rate_card_history, client_as):
    card = rate_card_history["card"]
    client = client_as("auditor")
    url = reverse("admin:governance_ratecard_history_compare", args=[card.pk])

    response = client.get(f"{url}?from=abc")

    assert response.status_code == 302
    assert response.url == reverse("admin:governance_ratecard_history", args=[card.pk])


def test_history_list_summarises_changed_fields_and_offers_compare(rate_card_history, client_as):
    # given
    card = rate_card_history["card"]
    client = client_as("auditor")

    # when
    response = client.get(reverse("admin:governance_ratecard_history", args=[card.pk]))

    # then each row shows what changed against the version before it, and the compare form is there
    assert response.status_code == 200
    rows = {record.history_id: record.hub_changed_fields for record in response.context["page_obj"]}
    assert rows[rate_card_history["moved"].history_id] == ["Legal entity"]
    assert rows[rate_card_history["widened"].history_id] == ["Tolerance percent"]
    assert rows[rate_card_history["created"].history_id] == []
    content = response.content.decode()
    assert 'id="history-compare-form"' in content and 'name="from"' in content and 'name="to"' in content
    assert "FIN-42 wider tolerance agreed with finance" in content and "ana.lyst" in content


def test_history_list_changed_fields_across_pages(rate_card_history, client_as, monkeypatch):
    # given one version per page: every row's predecessor sits on the next page
    monkeypatch.setattr(HubHistoryAdmin, "history_list_per_page", 1)
    card = rate_card_history["card"]
    client = client_as("auditor")

    # when
    response = client.get(reverse("admin:governance_ratecard_history", args=[card.pk]) + "?p=2")

    # then the row still shows its own change
    (record,) = response.context["page_obj"]
    assert record.history_id == rate_card_history["widened"].history_id
    assert record.hub_changed_fields == ["Tolerance percent"]


def test_auditor_sees_no_revert_links_in_history(rate_card_history, client_as):
    card = rate_card_history["card"]

    auditor_page = client_as("auditor").get(reverse("admin:governance_ratecard_history", args=[card.pk]))
    analyst_page = client_as("analyst").get(reverse("admin:governance_ratecard_history", args=[card.pk]))

    revert_url = reverse("admin:governance_ratecard_simple_history", args=[card.pk, rate_card_history["created"].pk])
    assert revert_url not in auditor_page.content.decode()
    assert 'class="revertlink"' not in auditor_page.content.decode()
    assert revert_url in analyst_page.content.decode()


def test_auditor_cannot_open_or_post_the_revert_form(rate_card_history, client_as):
    # given an auditor and the first version of a card (tolerance 5.00)
    card, created = rate_card_history["card"], rate_card_history["created"]
    client = client_as("auditor")
    url = reverse("admin:governance_ratecard_simple_history", args=[card.pk, created.pk])
    versions_before = card.history.count()

    # when
    get_response = client.get(url)
    post_response = client.post(
        url,
        {
            "name": "Hacked",
            "legal_entity": card.legal_entity_id,
            "currency": "GBP",
            "valid_from": "2025-01-01",
            "tolerance_percent": "99.00",
            "change_reason": "revert by auditor",
        },
    )

    # then both are refused and nothing changed
    assert get_response.status_code == 403
    assert post_response.status_code == 403
    card.refresh_from_db()
    assert card.name == "UK standard 2025" and card.tolerance_percent == Decimal("7.50")
    assert card.history.count() == versions_before


def test_analyst_can_still_revert_with_a_reason(rate_card_history, client_as):
    # given an analyst (change permission) on the first version
    card, created = rate_card_history["card"], rate_card_history["created"]
    client = client_as("analyst")
    url = reverse("admin:governance_ratecard_simple_history", args=[card.pk, created.pk])

    # when
    page = client.get(url)
    response = client.post(
        url,
        {
            "name": card.name,
            "legal_entity": created.legal_entity_id,
            "currency": "GBP",
            "valid_from": "2025-01-01",
            "tolerance_percent": "5.00",
            "change_reason": "back to the 2025 tolerance",
        },
    )

    # then the revert went through and is recorded with its reason
    assert page.status_code == 200
    assert response.status_code == 302
    card.refresh_from_db()
    assert card.tolerance_percent == Decimal("5.00")
    assert card.history.latest().history_change_reason == "back to the 2025 tolerance"


def test_change_form_asks_editors_for_a_reason_but_not_view_only_users(rate_card_history, client_as):
    # given
    card = rate_card_history["card"]
    url = reverse("admin:governance_ratecard_change", args=[card.pk])

    # when
    auditor_page = client_as("auditor").get(url)
    analyst_page = client_as("analyst").get(url)

    # then an auditor gets no empty "reason" row; an analyst gets the required input
    assert auditor_page.status_code == 200 and analyst_page.status_code == 200
    assert all("change_reason" not in fieldset.fields for fieldset in auditor_page.context["adminform"])
    assert 'name="change_reason"' not in auditor_page.content.decode()
    assert "Change reason" not in auditor_page.content.decode()
    assert 'name="change_reason"' in analyst_page.content.decode()


def test_compare_works_for_a_deleted_record(make_role_user, client_as):
    # given a legal entity created, renamed and then deleted
    analyst = make_role_user("analyst", username="ana.lyst")
    gone = save_as(entity("DE01", "Firm Germany GmbH"), analyst, "opened the German entity")
    gone.name = "Firm Deutschland GmbH"
    save_as(gone, analyst, "legal name")
    gone_pk = gone.pk
    gone._history_user, gone._change_reason = analyst, "entity closed"
    gone.delete()
    renamed, deleted = list(LegalEntity.history.filter(id=gone_pk).order_by("history_date"))[-2:]

    # when an auditor compares the rename with the deletion
    response = client_as("auditor").get(compare_url(LegalEntity(pk=gone_pk), renamed.history_id, deleted.history_id))

    # then the page shows the deletion with who and why
    assert response.status_code == 200
    diff = response.context["diff"]
    assert diff.to_version.history_type_label == "deleted"
    assert diff.to_version.reason == "entity closed"
    assert diff.changes == []
