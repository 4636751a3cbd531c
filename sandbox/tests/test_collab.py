"""The sandbox collaboration suite speaks Microsoft Graph: groups, members, teams archive, $filter lookups."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
V1 = "/sandbox/collab/v1.0"


def make_user(client: Client, name: str) -> dict:
    response = client.post(
        f"{V1}/users",
        {
            "displayName": name,
            "userPrincipalName": f"{name.lower()}@firm.example",
            "mail": f"{name.lower()}@firm.example",
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def make_group(client: Client, nickname: str = "nw-data-01") -> dict:
    response = client.post(
        f"{V1}/groups",
        {"displayName": "Northwind data platform", "mailNickname": nickname, "groupTypes": ["Unified"]},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_missing_or_wrong_bearer_is_401_invalid_authentication_token(sandbox_credentials):
    empty = Client().get(f"{V1}/groups")
    assert empty.status_code == 401
    assert empty.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert empty.json()["error"]["message"] == "Access token is empty."
    wrong = Client(HTTP_AUTHORIZATION="Bearer nope").get(f"{V1}/groups")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_token_endpoint_issues_a_usable_token_and_refuses_a_wrong_secret(sandbox_credentials):
    form = {
        "grant_type": "client_credentials",
        "client_id": "collab-app",
        "scope": "https://graph.microsoft.com/.default",
    }
    good = Client().post("/sandbox/collab/oauth2/v2.0/token", {**form, "client_secret": "collab-secret"})
    assert good.status_code == 200 and good.json()["token_type"] == "Bearer"
    authed = Client(HTTP_AUTHORIZATION=f"Bearer {good.json()['access_token']}")
    assert authed.get("/sandbox/collab/whoami").status_code == 200
    bad = Client().post("/sandbox/collab/oauth2/v2.0/token", {**form, "client_secret": "wrong"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


def test_group_create_get_and_find_by_mail_nickname(collab_client):
    # when a group is created
    group = make_group(collab_client)
    # then it has a Graph id and the workspace fields
    assert len(group["id"]) == 36 and group["mail"] == "nw-data-01@sandbox.onmicrosoft.com"
    assert collab_client.get(f"{V1}/groups/{group['id']}").json()["displayName"] == "Northwind data platform"
    # when it is searched for by its nickname (the idempotent lookup)
    found = collab_client.get(f"{V1}/groups", {"$filter": "mailNickname eq 'nw-data-01'"}).json()
    # then exactly that group comes back; another nickname finds nothing
    assert [g["id"] for g in found["value"]] == [group["id"]]
    assert collab_client.get(f"{V1}/groups", {"$filter": "mailNickname eq 'other'"}).json()["value"] == []


def test_duplicate_mail_nickname_is_400(collab_client):
    make_group(collab_client)
    again = collab_client.post(
        f"{V1}/groups", {"displayName": "x", "mailNickname": "nw-data-01"}, content_type="application/json"
    )
    assert again.status_code == 400
    assert "mailNickname already exists" in again.json()["error"]["message"]


def test_unsupported_filter_is_400(collab_client):
    response = collab_client.get(f"{V1}/groups", {"$filter": "startswith(displayName,'a')"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "Request_UnsupportedQuery"


def test_members_are_added_by_reference_once(collab_client):
    group, user = make_group(collab_client), make_user(collab_client, "Alice")
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/users/{user['id']}"}
    url = f"{V1}/groups/{group['id']}/members/$ref"
    # when a member is added
    assert collab_client.post(url, ref, content_type="application/json").status_code == 204
    # then it is listed; adding it again is Graph's 400
    members = collab_client.get(f"{V1}/groups/{group['id']}/members").json()["value"]
    assert [m["id"] for m in members] == [user["id"]]
    assert collab_client.post(url, ref, content_type="application/json").status_code == 400
    # and it can be removed
    remove = collab_client.delete(f"{V1}/groups/{group['id']}/members/{user['id']}/$ref")
    assert remove.status_code == 204
    assert collab_client.get(f"{V1}/groups/{group['id']}/members").json()["value"] == []


def test_archive_patch_and_delete(collab_client):
    group = make_group(collab_client)
    # archive through teams, as Graph does: 202 and a Location
    archived = collab_client.post(f"{V1}/teams/{group['id']}/archive")
    assert archived.status_code == 202 and archived["Location"].startswith(f"/teams('{group['id']}')/operations(")
    assert collab_client.get(f"{V1}/teams/{group['id']}").json()["isArchived"] is True
    # patch a writable property
    patch = collab_client.patch(f"{V1}/groups/{group['id']}", {"description": "done"}, content_type="application/json")
    assert patch.status_code == 204
    assert collab_client.get(f"{V1}/groups/{group['id']}").json()["description"] == "done"
    # delete: gone, and the nickname is free again
    assert collab_client.delete(f"{V1}/groups/{group['id']}").status_code == 204
    gone = collab_client.get(f"{V1}/groups/{group['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "Request_ResourceNotFound"
    assert make_group(collab_client)["id"] != group["id"]


def test_groups_page_with_next_link(collab_client):
    ids = [make_group(collab_client, f"g-{index}")["id"] for index in range(5)]
    seen, url, params = [], f"{V1}/groups", {"$top": "2"}
    while url:
        body = collab_client.get(url, params).json()
        seen += [g["id"] for g in body["value"]]
        url, params = body.get("@odata.nextLink", "").replace("http://testserver", ""), None
    assert seen == ids
