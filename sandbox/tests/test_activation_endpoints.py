"""Sandbox additions the opportunity-to-project saga uses: PSA staffing release, the collaboration naming policy."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _project(psa_client) -> dict:
    client = psa_client.post("/sandbox/psa/v2/clients", {"name": "Staffing Co"}, content_type="application/json")
    response = psa_client.post(
        "/sandbox/psa/v2/projects",
        {"client_id": client.json()["id"], "name": "Staffed project"},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_releasing_staffing_marks_the_project_once(psa_client):
    # given a PSA project
    project = _project(psa_client)
    # when its staffing is released twice
    first = psa_client.post(f"/sandbox/psa/v2/projects/{project['id']}/release_staffing")
    second = psa_client.post(f"/sandbox/psa/v2/projects/{project['id']}/release_staffing")
    # then it is released, and the second call keeps the first release time
    assert first.status_code == 200 and first.json()["staffing_status"] == "released"
    assert second.json()["staffing_released_at"] == first.json()["staffing_released_at"]


def test_an_archived_project_staffing_is_not_released(psa_client):
    # given an archived project
    project = _project(psa_client)
    psa_client.patch(f"/sandbox/psa/v2/projects/{project['id']}", {"is_active": False}, content_type="application/json")
    # when its staffing is released, then the PSA refuses and the project stays unreleased
    response = psa_client.post(f"/sandbox/psa/v2/projects/{project['id']}/release_staffing")
    assert response.status_code == 422
    assert "staffing_status" not in psa_client.get(f"/sandbox/psa/v2/projects/{project['id']}").json()
    # and an unknown project is 404, a GET is 405
    assert psa_client.post("/sandbox/psa/v2/projects/999999/release_staffing").status_code == 404
    assert psa_client.get(f"/sandbox/psa/v2/projects/{project['id']}/release_staffing").status_code == 405


def test_the_naming_policy_refuses_a_group_with_a_blocked_word(collab_client):
    # when a group whose name contains a blocked word is created
    response = collab_client.post(
        "/sandbox/collab/v1.0/groups",
        {"displayName": "Confidential deal room", "mailNickname": "deal-room"},
        content_type="application/json",
    )
    # then it is refused, and no group was stored
    assert response.status_code == 400
    assert "blocked word" in response.json()["error"]["message"]
    listed = collab_client.get("/sandbox/collab/v1.0/groups", {"$filter": "mailNickname eq 'deal-room'"})
    assert listed.json()["value"] == []
