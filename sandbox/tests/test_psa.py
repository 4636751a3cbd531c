"""The sandbox PSA speaks Harvest v2: token + account header, page-number paging, idempotent time entries, approval."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from sandbox.choices import PsaObject, SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.tests.conftest import PSA_ACCOUNT, PSA_TOKEN

pytestmark = pytest.mark.django_db
V2 = "/sandbox/psa/v2"


def post(client: Client, resource: str, body: dict, **headers) -> dict:
    response = client.post(f"{V2}/{resource}", body, content_type="application/json", **headers)
    assert response.status_code in (200, 201), response.content
    return response.json()


@pytest.fixture
def staffed_project(psa_client) -> dict:
    """A user (Senior Consultant), a client and its project."""
    user = post(
        psa_client,
        "users",
        {"first_name": "Chloe", "last_name": "Martin", "email": "c@x.example", "roles": ["Senior Consultant"]},
    )
    client = post(psa_client, "clients", {"name": "Northwind", "currency": "USD"})
    project = post(psa_client, "projects", {"client_id": client["id"], "name": "Data platform", "code": "NW-1"})
    return {"user": user, "client": client, "project": project}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": "Bearer wrong", "HTTP_HARVEST_ACCOUNT_ID": PSA_ACCOUNT},
        {"HTTP_AUTHORIZATION": f"Bearer {PSA_TOKEN}"},
        {"HTTP_AUTHORIZATION": f"Bearer {PSA_TOKEN}", "HTTP_HARVEST_ACCOUNT_ID": "1"},
    ],
    ids=["nothing", "wrong-token", "no-account", "wrong-account"],
)
def test_wrong_token_or_account_is_401_invalid_token(sandbox_credentials, headers):
    response = Client(**headers).get(f"{V2}/time_entries")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_users_me_and_whoami_answer_with_the_token(psa_client):
    assert psa_client.get(f"{V2}/users/me").json()["account_id"] == int(PSA_ACCOUNT)
    assert psa_client.get("/sandbox/psa/whoami").status_code == 200
    assert Client().get("/sandbox/psa/health").json() == {"status": "ok"}


def test_time_entry_create_is_harvest_shaped(psa_client, staffed_project):
    # when a time entry is created
    entry = post(
        psa_client,
        "time_entries",
        {
            "user_id": staffed_project["user"]["id"],
            "project_id": staffed_project["project"]["id"],
            "spent_date": "2025-03-03",
            "hours": 7.5,
            "notes": "Workshop",
            "cost_code": "CONS",
        },
    )
    # then references are expanded and the extension fields are there
    assert isinstance(entry["id"], int)
    assert entry["user"] == {"id": staffed_project["user"]["id"], "name": "Chloe Martin"}
    assert entry["project"]["name"] == "Data platform" and entry["project"]["code"] == "NW-1"
    assert entry["client"]["name"] == "Northwind"
    assert entry["task"] == {"id": 1, "name": "Consulting"}
    assert entry["hours"] == 7.5 and entry["billable"] is True
    assert entry["approval_status"] == "unsubmitted" and entry["approved_at"] is None
    assert entry["role"] == "Senior Consultant" and entry["cost_code"] == "CONS"
    assert entry["created_at"].endswith("Z") and len(entry["created_at"]) == 20


def test_time_entry_with_the_same_idempotency_key_is_created_once(psa_client, staffed_project):
    body = {
        "user_id": staffed_project["user"]["id"],
        "project_id": staffed_project["project"]["id"],
        "spent_date": "2025-03-03",
        "hours": 2,
    }
    # when the same entry is posted twice with one key
    first = psa_client.post(f"{V2}/time_entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = psa_client.post(f"{V2}/time_entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    # then the first creates (201) and the second answers the same record (200)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert SandboxRecord.objects.filter(system=SandboxSystem.PSA, object_type=PsaObject.TIME_ENTRY).count() == 1
    # and a different key makes a new one
    third = psa_client.post(f"{V2}/time_entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert third.status_code == 201 and third.json()["id"] != first.json()["id"]
    # and the key can be looked up
    assert psa_client.get(f"{V2}/time_entries", {"idempotency_key": "k-1"}).json()["total_entries"] == 1


def test_validation_errors_are_422_with_a_message(psa_client, staffed_project):
    missing = psa_client.post(f"{V2}/time_entries", {"hours": 1}, content_type="application/json")
    assert missing.status_code == 422 and "can't be blank" in missing.json()["message"]
    bad_project = psa_client.post(
        f"{V2}/time_entries",
        {"user_id": staffed_project["user"]["id"], "project_id": 999999, "spent_date": "2025-01-01"},
        content_type="application/json",
    )
    assert bad_project.status_code == 422 and bad_project.json()["message"] == "Project is not valid"


def test_updated_since_pages_through_three_pages_without_gap_or_duplicate(psa_client, staffed_project):
    # given 25 entries changed recently and 5 long ago
    user, project = staffed_project["user"]["id"], staffed_project["project"]["id"]
    recent = timezone.now() - dt.timedelta(minutes=10)
    ids = []
    for index in range(30):
        entry = post(
            psa_client, "time_entries", {"user_id": user, "project_id": project, "spent_date": "2025-01-01", "hours": 1}
        )
        stamp = recent - dt.timedelta(days=30) if index < 5 else recent + dt.timedelta(seconds=index)
        SandboxRecord.objects.filter(system=SandboxSystem.PSA, external_id=str(entry["id"])).update(updated_at=stamp)
        ids.append(entry["id"])
    # when they are listed since `recent`, 10 per page, following next_page
    seen, page, pages = [], 1, 0
    while page:
        body = psa_client.get(
            f"{V2}/time_entries", {"updated_since": recent.isoformat(), "per_page": 10, "page": page}
        ).json()
        pages += 1
        assert body["total_entries"] == 25 and body["total_pages"] == 3 and body["page"] == page
        seen += [entry["id"] for entry in body["time_entries"]]
        if body["next_page"]:
            assert f"page={body['next_page']}" in body["links"]["next"]
        page = body["next_page"]
    # then three pages return each recent entry exactly once
    assert pages == 3
    assert seen == ids[5:]


def test_a_later_page_reads_after_the_previous_page_and_a_change_starts_a_fresh_count(psa_client, staffed_project):
    """Page N+1 of the same query reads after page N's last id (no COUNT, no OFFSET); a write is seen at once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user, project = staffed_project["user"]["id"], staffed_project["project"]["id"]
    body = {"user_id": user, "project_id": project, "spent_date": "2025-01-01", "hours": 1}
    ids = [post(psa_client, "time_entries", body)["id"] for _ in range(7)]

    def page(number: int) -> dict:
        return psa_client.get(f"{V2}/time_entries", {"per_page": 3, "page": number}).json()

    # given the first page was read
    assert [entry["id"] for entry in page(1)["time_entries"]] == ids[:3]
    # when the next two pages are read
    with CaptureQueriesContext(connection) as queries:
        second, third = page(2), page(3)
    # then they hold the rest in order, with the total, and were read without counting or skipping rows
    assert [entry["id"] for entry in second["time_entries"] + third["time_entries"]] == ids[3:]
    assert second["total_entries"] == third["total_entries"] == 7 and third["next_page"] is None
    listed = [query["sql"].upper() for query in queries.captured_queries if "sandbox_sandboxrecord" in query["sql"]]
    assert not [sql for sql in listed if "COUNT(" in sql or "OFFSET" in sql], listed
    # when an entry of the first page is deleted through the API
    assert psa_client.delete(f"{V2}/time_entries/{ids[0]}").status_code in (200, 204)
    # then the same pages are counted and numbered afresh: page 2 now starts one entry later
    after = page(2)
    assert after["total_entries"] == 6
    assert [entry["id"] for entry in after["time_entries"]] == ids[4:7]


def test_approve_sets_status_and_locks_the_entry(psa_client, staffed_project):
    entry = post(
        psa_client,
        "time_entries",
        {
            "user_id": staffed_project["user"]["id"],
            "project_id": staffed_project["project"]["id"],
            "spent_date": "2025-03-03",
            "hours": 3,
        },
    )
    # when it is approved
    approved = psa_client.post(f"{V2}/time_entries/{entry['id']}/approve").json()
    # then it is approved, stamped and locked
    assert approved["approval_status"] == "approved" and approved["approved_at"] and approved["is_locked"] is True
    assert psa_client.get(f"{V2}/time_entries", {"approval_status": "approved"}).json()["total_entries"] == 1
    # and it cannot be changed until unapproved
    locked = psa_client.patch(f"{V2}/time_entries/{entry['id']}", {"hours": 4}, content_type="application/json")
    assert locked.status_code == 422
    psa_client.post(f"{V2}/time_entries/{entry['id']}/unapprove")
    changed = psa_client.patch(f"{V2}/time_entries/{entry['id']}", {"hours": 4}, content_type="application/json")
    assert changed.status_code == 200 and changed.json()["hours"] == 4.0
    assert changed.json()["approval_status"] == "unsubmitted"


def test_projects_and_milestones_create_read_update(psa_client, staffed_project):
    project_id = staffed_project["project"]["id"]
    # projects: get and patch
    assert psa_client.get(f"{V2}/projects/{project_id}").json()["client"]["name"] == "Northwind"
    patched = psa_client.patch(f"{V2}/projects/{project_id}", {"is_active": False}, content_type="application/json")
    assert patched.json()["is_active"] is False
    assert psa_client.get(f"{V2}/projects", {"is_active": "true"}).json()["total_entries"] == 0
    # milestones: create, complete, list per project
    milestone = post(psa_client, "milestones", {"project_id": project_id, "name": "MVP", "amount": 50000.0})
    assert milestone["status"] == "open" and milestone["project"]["id"] == project_id
    done = psa_client.patch(
        f"{V2}/milestones/{milestone['id']}", {"status": "completed"}, content_type="application/json"
    ).json()
    assert done["status"] == "completed" and done["completed_at"].endswith("Z")
    listed = psa_client.get(f"{V2}/milestones", {"project_id": project_id, "status": "completed"}).json()
    assert [m["id"] for m in listed["milestones"]] == [milestone["id"]]
    bad = psa_client.patch(f"{V2}/milestones/{milestone['id']}", {"status": "x"}, content_type="application/json")
    assert bad.status_code == 422


def test_users_list_and_unknown_record(psa_client, staffed_project):
    users = psa_client.get(f"{V2}/users").json()
    assert users["users"][0]["roles"] == ["Senior Consultant"]
    assert psa_client.get(f"{V2}/projects/999999").status_code == 404
