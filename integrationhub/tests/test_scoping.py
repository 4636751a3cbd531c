"""Legal-entity scoping: a regional analyst sees and edits only their entities' rate cards, in the API and the
admin alike; enterprise-level records are read-only to them; an API key's legal entity narrows further."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from governance.models import RateCard
from governance.tests.factories import LegalEntityFactory, RateCardFactory
from integrationhub.models import UserLegalEntityScope
from integrationhub.scoping import entity_editable, records_visible_to
from mappings.models import ValueMap

pytestmark = pytest.mark.django_db

PROBE = "integrationhub.tests.sec_urls"
API = "/api/test-api/scoped-rate-cards/"


@pytest.fixture
def cards():
    uk, de = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="DE01", country="DE", base_currency="EUR")
    return {
        "uk": RateCardFactory(legal_entity=uk, name="UK card"),
        "de": RateCardFactory(legal_entity=de, name="DE card"),
    }


@pytest.fixture
def regional(make_role_user, client):
    """An analyst scoped to UK01, logged in."""
    user = make_role_user("analyst", username="uk-analyst")
    scope, _ = UserLegalEntityScope.objects.update_or_create(user=user, defaults={"all_entities": False})
    scope.legal_entities.set([LegalEntityFactory(code="UK01")])
    client.force_login(user)
    return client


def send(client, method, url, body):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


def card_body(entity: str, **overrides) -> dict:
    # A client override, so the new card does not overlap the entity's default card.
    return {
        "name": f"{entity} new",
        "legal_entity": entity,
        "currency": "GBP",
        "valid_from": "2031-01-01",
        "client_ref": "C-1",
        **overrides,
    }


# --- API ---------------------------------------------------------------------------------------------------


@override_settings(ROOT_URLCONF=PROBE)
def test_regional_analyst_sees_only_their_entities_cards_in_the_api(cards, regional):
    listing = regional.get(API)
    assert [c["name"] for c in listing.json()["results"]] == ["UK card"]
    assert regional.get(f"{API}{cards['de'].pk}/").status_code == 404


@override_settings(ROOT_URLCONF=PROBE)
def test_regional_analyst_edits_their_entity_and_is_refused_elsewhere_without_changes(cards, regional):
    # when they change their UK card, create a UK card, and try a DE card, a move to DE and a DE delete
    changed = send(regional, "patch", f"{API}{cards['uk'].pk}/", {"name": "UK renamed"})
    created = send(regional, "post", API, card_body("UK01"))
    refused_create = send(regional, "post", API, card_body("DE01"))
    refused_move = send(regional, "patch", f"{API}{cards['uk'].pk}/", {"legal_entity": "DE01"})
    refused_delete = regional.delete(f"{API}{cards['de'].pk}/")

    # then only the UK writes happened
    assert (changed.status_code, created.status_code) == (200, 201)
    assert (refused_create.status_code, refused_move.status_code, refused_delete.status_code) == (403, 403, 404)
    assert sorted(RateCard.objects.values_list("name", "legal_entity__code")) == [
        ("DE card", "DE01"),
        ("UK renamed", "UK01"),
        ("UK01 new", "UK01"),
    ]


@override_settings(ROOT_URLCONF=PROBE)
def test_enterprise_analyst_sees_every_entity(cards, client_as):
    listing = client_as("analyst").get(API)
    assert sorted(c["name"] for c in listing.json()["results"]) == ["DE card", "UK card"]


@override_settings(ROOT_URLCONF=PROBE)
def test_an_api_keys_legal_entity_narrows_an_enterprise_owner(cards, make_api_key, key_client):
    _, key = make_api_key("analyst", scopes=["config:read", "config:write"], legal_entity=cards["de"].legal_entity)
    client = key_client(key)
    assert [c["name"] for c in client.get(API).json()["results"]] == ["DE card"]
    assert send(client, "patch", f"{API}{cards['uk'].pk}/", {"name": "x"}).status_code == 404
    assert send(client, "post", API, card_body("UK01")).status_code == 403
    assert RateCard.objects.count() == 2


# --- admin -------------------------------------------------------------------------------------------------


@override_settings(ROOT_URLCONF=PROBE)
def test_regional_analyst_sees_only_their_entities_cards_in_the_admin(cards, regional):
    page = regional.get("/scoped-admin/governance/ratecard/").content.decode()
    assert "UK card" in page and "DE card" not in page
    other = regional.get(f"/scoped-admin/governance/ratecard/{cards['de'].pk}/change/")
    assert other.status_code == 302  # the admin's "does not exist" redirect
    mine = regional.get(f"/scoped-admin/governance/ratecard/{cards['uk'].pk}/change/")
    assert mine.status_code == 200 and 'name="_save"' in mine.content.decode()


@override_settings(ROOT_URLCONF=PROBE)
def test_regional_analyst_can_only_pick_their_entity_when_adding_in_the_admin(cards, regional):
    # the add form offers UK only
    form = regional.get("/scoped-admin/governance/ratecard/add/").context["adminform"].form
    assert [entity.code for entity in form.fields["legal_entity"].queryset] == ["UK01"]

    # and a forged post for DE is refused by the form: nothing is created
    response = regional.post(
        "/scoped-admin/governance/ratecard/add/",
        {
            "name": "forged",
            "legal_entity": cards["de"].legal_entity.pk,
            "currency": "EUR",
            "valid_from": "2031-01-01",
            "tolerance_percent": "0",
            "change_reason": "test",
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not RateCard.objects.filter(name="forged").exists()


# --- enterprise-level records (legal entity empty) ----------------------------------------------------------


def test_enterprise_level_records_are_visible_but_read_only_to_a_regional_user(make_role_user):
    uk, de = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="DE01")
    enterprise = ValueMap.objects.create(name="Country codes", legal_entity=None)
    ValueMap.objects.create(name="UK roles", legal_entity=uk)
    ValueMap.objects.create(name="DE roles", legal_entity=de)
    user = make_role_user("analyst", username="uk-analyst")
    UserLegalEntityScope.objects.update_or_create(user=user, defaults={"all_entities": False})[0].legal_entities.set(
        [uk]
    )

    visible = records_visible_to(user, ValueMap.objects.all())

    assert sorted(visible.values_list("name", flat=True)) == ["Country codes", "UK roles"]
    assert entity_editable(user, enterprise.legal_entity_id) is False
    assert entity_editable(user, uk.pk) is True and entity_editable(user, de.pk) is False
    assert entity_editable(make_role_user("analyst", username="hq-analyst"), None) is True
