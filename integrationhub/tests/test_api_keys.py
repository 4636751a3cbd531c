"""API keys: shown once and stored hashed, expiry and revocation, and each scope allowing and refusing."""

from __future__ import annotations

import datetime
import hashlib
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from governance.models import RateCard
from governance.tests.factories import LegalEntityFactory, RateCardFactory
from integrationhub.apikeys import api_key_revoke
from integrationhub.models import ApiKey, AuditEvent
from integrationhub.tests import sec_urls

pytestmark = pytest.mark.django_db

PROBE = "integrationhub.tests.sec_urls"


def post_json(client, url, body=None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


def card_body(**overrides) -> dict:
    return {"name": "UK 2026", "legal_entity": "UK01", "currency": "GBP", "valid_from": "2026-01-01", **overrides}


@pytest.fixture(autouse=True)
def _clear_probe_writes():
    sec_urls.WRITES.clear()


# --- creation: shown once, stored hashed ------------------------------------------------------------------


def test_creating_a_key_through_the_api_shows_it_once_and_stores_only_its_hash(client_as):
    # given an integration admin in a browser session
    client = client_as("integration_admin")

    # when they create a key
    response = post_json(client, "/api/v1/api-keys/", {"name": "relay", "scopes": ["config:read", "kpis:read"]})

    # then the answer carries the key, once; the row holds only its hash and the audit has the creation
    assert response.status_code == 201, response.content
    body = response.json()
    key = body["key"]
    stored = ApiKey.objects.get(pk=body["id"])
    assert key.startswith(stored.prefix) and len(key) > 40
    assert stored.hashed_key == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert stored.owner.username == "integration_admin-user" and stored.scopes == ["config:read", "kpis:read"]
    listing = (
        client.get("/api/v1/api-keys/").content.decode() + client.get(f"/api/v1/api-keys/{stored.pk}/").content.decode()
    )
    assert key not in listing and stored.hashed_key not in listing and stored.prefix in listing
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor_username == "integration_admin-user" and event.object_id == str(stored.pk)
    assert key not in json.dumps(event.details) + event.summary


def test_unknown_scope_is_refused_with_field_errors(client_as):
    client = client_as("integration_admin")
    response = post_json(client, "/api/v1/api-keys/", {"name": "bad", "scopes": ["config:read", "root:all"]})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/problem+json")
    assert [e["field"] for e in response.json()["errors"]] == ["scopes.1"]
    assert ApiKey.objects.count() == 0


def test_analyst_may_not_create_keys(client_as):
    response = post_json(client_as("analyst"), "/api/v1/api-keys/", {"name": "mine", "scopes": ["config:read"]})
    assert response.status_code == 403 and ApiKey.objects.count() == 0


def test_a_key_cannot_manage_keys_even_with_every_scope(make_api_key, key_client):
    # given a key with every scope, owned by an integration admin
    api_key, key = make_api_key("integration_admin", scopes=["config:read", "config:write", "audit:read"])

    # when it tries to list, mint or revoke keys
    client = key_client(key)
    responses = [
        client.get("/api/v1/api-keys/"),
        post_json(client, "/api/v1/api-keys/", {"name": "child", "scopes": ["config:write"]}),
        client.post(f"/api/v1/api-keys/{api_key.pk}/revoke/"),
    ]

    # then each is refused and no key was made or revoked
    assert [r.status_code for r in responses] == [403, 403, 403]
    assert ApiKey.objects.count() == 1 and ApiKey.objects.get().revoked_at is None


def test_create_api_key_command_prints_the_key_once(make_role_user):
    make_role_user("integration_admin", username="ops")
    LegalEntityFactory(code="UK01")
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_key",
        "--name",
        "ci",
        "--owner",
        "ops",
        "--scope",
        "all",
        "--legal-entity",
        "UK01",
        stdout=out,
        stderr=err,
    )
    key = out.getvalue().strip()
    api_key = ApiKey.objects.get()
    assert key.startswith(api_key.prefix) and api_key.legal_entity.code == "UK01"
    assert "messages:replay" in api_key.scopes and key not in err.getvalue()


def test_admin_create_shows_the_key_on_the_answer_page_and_nowhere_else(client_as):
    # given an integration admin in the admin
    client = client_as("integration_admin")
    owner_id = ApiKey._meta.get_field("owner").related_model.objects.get(username="integration_admin-user").pk

    # when they add a key
    response = client.post(
        "/admin/integrationhub/apikey/add/",
        {
            "name": "from admin",
            "owner": owner_id,
            "scopes": ["config:read", "kpis:read"],
            "legal_entity": "",
            "expires_at": "",
        },
    )

    # then the answer page (not a redirect) shows the key, and the key's page afterwards does not
    assert response.status_code == 200, response.content[:2000]
    api_key = ApiKey.objects.get()
    page = response.content.decode()
    key_start = page.index(f"{api_key.prefix}.")
    key = page[key_start : page.index("<", key_start)]
    assert hashlib.sha256(key.encode()).hexdigest() == api_key.hashed_key
    assert "no-store" in response["Cache-Control"]
    detail = client.get(f"/admin/integrationhub/apikey/{api_key.pk}/change/").content.decode()
    assert key not in detail and api_key.prefix in detail


def test_admin_revoke_action_revokes_and_audits(client_as, make_api_key):
    api_key, _ = make_api_key("analyst", scopes=["config:read"])
    client = client_as("integration_admin")
    response = client.post(
        "/admin/integrationhub/apikey/", {"action": "revoke_selected", "_selected_action": [api_key.pk]}
    )
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None and api_key.revoked_by.username == "integration_admin-user"
    assert AuditEvent.objects.filter(action="api_key.revoked", object_id=str(api_key.pk)).count() == 1


# --- authentication ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
def test_a_valid_key_reads_config_as_its_owner(make_api_key, key_client, header):
    RateCardFactory(legal_entity=LegalEntityFactory(code="UK01"))
    api_key, key = make_api_key("auditor", scopes=["config:read"])
    response = key_client(key, header=header).get("/api/v1/rate-cards/")
    assert response.status_code == 200 and response.json()["count"] == 1
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None


def test_an_expired_key_gets_401_problem_json_and_changes_nothing(make_api_key, key_client):
    # given a key that expired a second ago
    LegalEntityFactory(code="UK01")
    api_key, key = make_api_key("analyst", scopes=["config:read", "config:write"])
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    # when it is used to read and to write
    client = key_client(key)
    read = client.get("/api/v1/rate-cards/")
    write = post_json(client, "/api/v1/rate-cards/", card_body())

    # then both are 401 problem+json saying it expired, and no card was created
    for response in (read, write):
        assert response.status_code == 401
        assert response["Content-Type"].startswith("application/problem+json")
        assert response["WWW-Authenticate"] == "Api-Key"
        assert "expired" in response.json()["detail"]
    assert RateCard.objects.count() == 0
    assert AuditEvent.objects.filter(action="auth.api_key_failed", object_id=api_key.prefix).count() == 2


def test_a_revoked_key_gets_401(make_api_key, key_client):
    api_key, key = make_api_key("analyst", scopes=["config:read"])
    client = key_client(key)
    assert client.get("/api/v1/rate-cards/").status_code == 200

    api_key_revoke(api_key=api_key)

    response = client.get("/api/v1/rate-cards/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_an_unknown_or_tampered_key_gets_401(make_api_key, key_client):
    api_key, key = make_api_key("analyst", scopes=["config:read"])
    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "nonsense", f"{api_key.prefix}.x"):
        response = key_client(bad).get("/api/v1/rate-cards/")
        assert response.status_code == 401 and response.json()["detail"] == "The API key is not valid."


def test_a_request_without_credentials_gets_401_naming_the_scheme(db):
    from django.test import Client

    response = Client().get("/api/v1/rate-cards/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Api-Key"
    assert response.json()["status"] == 401


def test_a_key_of_a_deactivated_owner_is_refused(make_api_key, key_client):
    api_key, key = make_api_key("analyst", scopes=["config:read"])
    api_key.owner.is_active = False
    api_key.owner.save()
    response = key_client(key).get("/api/v1/rate-cards/")
    assert response.status_code == 401 and "deactivated" in response.json()["detail"]


# --- scopes ------------------------------------------------------------------------------------------------


def test_config_write_scope_allows_creating_a_rate_card(make_api_key, key_client):
    LegalEntityFactory(code="UK01")
    _, key = make_api_key("analyst", scopes=["config:write"])
    response = post_json(key_client(key), "/api/v1/rate-cards/", card_body())
    assert response.status_code == 201, response.content
    assert RateCard.objects.get().history.first().history_user.username.startswith("analyst-key-owner")


def test_config_read_scope_refuses_writes_and_nothing_changes(make_api_key, key_client):
    # given a card and a read-only key of an analyst (whose role could write)
    card = RateCardFactory(legal_entity=LegalEntityFactory(code="UK01"), name="Original")
    _, key = make_api_key("analyst", scopes=["config:read"])
    client = key_client(key)

    # when it creates, changes and deletes
    responses = [
        post_json(client, "/api/v1/rate-cards/", card_body(valid_from="2030-01-01")),
        client.patch(
            f"/api/v1/rate-cards/{card.pk}/", json.dumps({"name": "Changed"}), content_type="application/json"
        ),
        client.delete(f"/api/v1/rate-cards/{card.pk}/"),
    ]

    # then each is 403 naming the missing scope, and the card is as it was
    assert [r.status_code for r in responses] == [403, 403, 403]
    assert all("config:write" in r.json()["detail"] for r in responses)
    assert list(RateCard.objects.values_list("name", flat=True)) == ["Original"]


def test_config_write_without_read_cannot_list(make_api_key, key_client):
    _, key = make_api_key("analyst", scopes=["config:write"])
    response = key_client(key).get("/api/v1/rate-cards/")
    assert response.status_code == 403 and "config:read" in response.json()["detail"]


def test_scope_does_not_lift_the_owners_role(make_api_key, key_client):
    # given an auditor's key with config:write: the scope allows, the role does not
    LegalEntityFactory(code="UK01")
    _, key = make_api_key("auditor", scopes=["config:read", "config:write"])

    # when it creates a card
    response = post_json(key_client(key), "/api/v1/rate-cards/", card_body())

    # then the role refuses and nothing is created
    assert response.status_code == 403 and RateCard.objects.count() == 0


# (family, scope that allows a read, scope that allows the write action, url of the write action)
FAMILIES = [
    ("config", "config:read", "config:write", "/api/test-api/probe-config/"),
    ("messages", "messages:read", "messages:replay", "/api/test-api/probe-messages/replay/"),
    ("exceptions", "exceptions:read", "exceptions:decide", "/api/test-api/probe-exceptions/decide/"),
]


@override_settings(ROOT_URLCONF=PROBE)
@pytest.mark.parametrize(("family", "read_scope", "write_scope", "write_url"), FAMILIES)
def test_each_family_read_and_write_scope_allows(make_api_key, key_client, family, read_scope, write_scope, write_url):
    _, key = make_api_key("integration_admin", scopes=[read_scope, write_scope])
    client = key_client(key)
    assert client.get(f"/api/test-api/probe-{family}/").status_code == 200
    assert post_json(client, write_url).status_code in (200, 201)
    assert [write_scope if family != "config" else "config:create"] == sec_urls.WRITES


@override_settings(ROOT_URLCONF=PROBE)
@pytest.mark.parametrize(("family", "read_scope", "write_scope", "write_url"), FAMILIES)
def test_each_family_refuses_a_key_without_its_scopes_and_nothing_is_written(
    make_api_key, key_client, family, read_scope, write_scope, write_url
):
    # given a key holding every scope except this family's
    others = [s for f in FAMILIES if f[0] != family for s in f[1:3]] + ["kpis:read", "events:write"]
    _, key = make_api_key("integration_admin", scopes=others)
    client = key_client(key)

    # when it reads and writes
    read = client.get(f"/api/test-api/probe-{family}/")
    write = post_json(client, write_url)

    # then both are refused, naming the scope needed, and nothing was written
    assert (read.status_code, write.status_code) == (403, 403)
    assert read_scope in read.json()["detail"] and write_scope in write.json()["detail"]
    assert sec_urls.WRITES == []


@override_settings(ROOT_URLCONF=PROBE)
def test_read_scope_alone_does_not_allow_the_write_action(make_api_key, key_client):
    _, key = make_api_key("integration_admin", scopes=["messages:read", "exceptions:read"])
    client = key_client(key)
    assert post_json(client, "/api/test-api/probe-messages/replay/").status_code == 403
    assert post_json(client, "/api/test-api/probe-exceptions/decide/").status_code == 403
    assert sec_urls.WRITES == []


@override_settings(ROOT_URLCONF=PROBE)
def test_kpis_read_allows_reading_and_no_scope_allows_writing_kpis(make_api_key, key_client):
    _, key = make_api_key("integration_admin", scopes=["kpis:read", "config:write", "events:write"])
    client = key_client(key)
    assert client.get("/api/test-api/probe-kpis/").status_code == 200
    assert post_json(client, "/api/test-api/probe-kpis/").status_code == 403
    assert sec_urls.WRITES == []
    _, other = make_api_key("integration_admin", scopes=["config:read"])
    assert key_client(other).get("/api/test-api/probe-kpis/").status_code == 403


@override_settings(ROOT_URLCONF=PROBE)
def test_events_write_allows_posting_events_and_nothing_else(make_api_key, key_client):
    _, key = make_api_key("integration_admin", scopes=["events:write"])
    client = key_client(key)
    assert post_json(client, "/api/test-api/probe-events/").status_code == 201
    assert client.get("/api/test-api/probe-events/").status_code == 403
    assert client.get("/api/test-api/probe-config/").status_code == 403
    assert sec_urls.WRITES == ["events:create"]
    _, other = make_api_key("integration_admin", scopes=["config:write"])
    assert post_json(key_client(other), "/api/test-api/probe-events/").status_code == 403
    assert sec_urls.WRITES == ["events:create"]


@override_settings(ROOT_URLCONF=PROBE)
def test_scope_is_enforced_even_when_a_view_replaces_its_permission_classes(make_api_key, key_client):
    _, key = make_api_key("integration_admin", scopes=["config:read"])
    response = key_client(key).get("/api/test-api/probe-overriding/")
    assert response.status_code == 403 and "kpis:read" in response.json()["detail"]


def test_connector_actions_with_their_own_permissions_still_need_config_write(make_api_key, key_client):
    # given a system and an integration admin's read-only key
    from connectors.tests.factories import ConnectedSystemFactory

    system = ConnectedSystemFactory(slug="erp")
    _, key = make_api_key("integration_admin", scopes=["config:read"])

    # when it pauses the system (an action whose view sets its own permission classes)
    response = key_client(key).post("/api/v1/systems/erp/pause/")

    # then it is refused and the system is still active
    assert response.status_code == 403
    system.refresh_from_db()
    assert system.state == "active"


def test_session_users_keep_role_permissions_only(client_as):
    # a browser session has no scopes to check: an analyst session reads and writes as its role allows
    LegalEntityFactory(code="UK01")
    client = client_as("analyst")
    assert client.get("/api/v1/rate-cards/").status_code == 200
    assert post_json(client, "/api/v1/rate-cards/", card_body()).status_code == 201
