"""Each role lands on its own page after signing in; the change feed lists history across configuration models."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from governance.models import LegalEntity, RateCard
from mappings.models import ValueMap

pytestmark = pytest.mark.django_db

PASSWORD = "test-password-123"
LANDINGS = {
    "finance_approver": "/admin/exception_queue/exceptionitem/?state__exact=open",
    "analyst": "/admin/mappings/mappingset/",
    "auditor": "/admin/history/",
    "leader": "/admin/insights/kpidashboard/",
    "integration_admin": "/admin/",
    "superuser": "/admin/",
}


@pytest.mark.parametrize("role", sorted(LANDINGS))
def test_each_role_lands_on_its_page_after_signing_in(role, make_role_user):
    # given a user of the role
    user = make_role_user(role, username=f"{role}-landing")
    client = Client()
    # when they sign in from the login page, or from the admin index that sent them there
    for next_url in ("", "/admin/"):
        response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD, "next": next_url})
        # then they land on their role's page
        assert response.status_code == 302
        assert response["Location"] == LANDINGS[role]
        assert client.get(response["Location"]).status_code == 200
        client.logout()


def test_an_explicit_destination_is_kept_and_a_wrong_password_lands_nowhere(make_role_user):
    user = make_role_user("auditor", username="audit-next")
    client = Client()
    # when signing in to reach a given page
    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD, "next": "/admin/trace/"})
    # then that page is kept
    assert response["Location"] == "/admin/trace/"
    client.logout()
    # and a failed sign-in stays on the form
    failed = client.post("/admin/login/", {"username": user.username, "password": "wrong-password"})
    assert failed.status_code == 200 and not failed.wsgi_request.user.is_authenticated


def saved(obj, user, reason):
    obj._history_user = user
    obj._change_reason = reason
    obj.save()
    return obj


@pytest.fixture
def changes(make_role_user):
    """An analyst changes a rate card twice and creates a value map; an admin creates a legal entity."""
    analyst = make_role_user("analyst", username="ana")
    admin_user = make_role_user("integration_admin", username="ops")
    entity = saved(
        LegalEntity(code="UK01", name="UK", country="GB", base_currency="GBP", tax_jurisdiction="GB"), admin_user, "new"
    )
    card = saved(
        RateCard(name="UK 2026", legal_entity=entity, currency="GBP", valid_from=datetime.date(2026, 1, 1)),
        analyst,
        "first card",
    )
    card.tolerance_percent = Decimal("3.00")
    saved(card, analyst, "wider tolerance")
    saved(ValueMap(name="stages"), analyst, "stage names")
    return {"card": card, "analyst": analyst}


def test_the_feed_lists_changes_newest_first_with_who_why_and_a_diff_link(client_as, changes):
    # given the changes above, and an auditor
    auditor = client_as("auditor")
    page = auditor.get("/admin/history/")
    # then every change is listed newest first with who and why
    entries = page.context["entries"]
    assert [e.reason for e in entries[:4]] == ["stage names", "wider tolerance", "first card", "new"]
    widened = entries[1]
    assert (widened.user, widened.model_label, widened.history_type_label) == ("ana", "governance.ratecard", "changed")
    # and the change links to the field-by-field compare of it against the version before
    card = changes["card"]
    versions = list(card.history.order_by("history_date").values_list("history_id", flat=True))
    assert widened.compare_url == (
        f"/admin/governance/ratecard/{card.pk}/history/compare/?from={versions[0]}&to={versions[1]}"
    )
    assert Client().get(widened.compare_url).status_code == 302  # the link needs a signed-in user
    compare = auditor.get(widened.compare_url)
    assert compare.status_code == 200 and "Tolerance percent" in compare.content.decode()
    # and a creation has no diff link
    assert entries[2].compare_url is None
    # and the audit log (with its CSV export) is linked from the feed
    assert 'id="audit-log-link" href="/admin/integrationhub/auditevent/"' in page.content.decode()


def test_the_feed_filters_by_user_record_type_and_date(client_as, changes):
    client = client_as("auditor")
    today = timezone.localdate().isoformat()
    tomorrow = (timezone.localdate() + datetime.timedelta(days=1)).isoformat()
    cases = {
        "user=ana": {"stage names", "wider tolerance", "first card"},
        "user=ops": {"new"},
        "type=governance.ratecard": {"wider tolerance", "first card"},
        "type=mappings.valuemap&user=ana": {"stage names"},
        f"since={today}&until={today}": {"stage names", "wider tolerance", "first card", "new"},
        f"since={tomorrow}": set(),
    }
    for query, reasons in cases.items():
        entries = client.get(f"/admin/history/?{query}").context["entries"]
        assert {e.reason for e in entries} == reasons, query


def test_the_feed_pages_through_older_changes(client_as, changes, monkeypatch):
    # given a page size of two
    monkeypatch.setattr("integrationhub.views.PAGE_SIZE", 2)
    client = client_as("auditor")
    # when the first and second pages are read
    first = client.get("/admin/history/")
    second = client.get("/admin/history/?page=2")
    # then they hold the four changes once each, with links between them
    reasons = [e.reason for e in first.context["entries"]] + [e.reason for e in second.context["entries"]]
    assert reasons == ["stage names", "wider tolerance", "first card", "new"]
    assert first.context["next_url"] and first.context["previous_url"] is None
    assert second.context["next_url"] is None and second.context["previous_url"]
