"""The sandbox ERP: API-key auth, JSON CRUD, idempotent posting, cursor paging, project and invoice status rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from sandbox.choices import SandboxSystem
from sandbox.models import SandboxRecord

pytestmark = pytest.mark.django_db
API = "/sandbox/erp/api"


def post(client: Client, resource: str, body: dict, status: int = 201, **headers) -> dict:
    response = client.post(f"{API}/{resource}", body, content_type="application/json", **headers)
    assert response.status_code == status, response.content
    return response.json()


@pytest.fixture
def erp_project(erp_client) -> dict:
    client = post(erp_client, "clients", {"name": "Northwind", "legal_entity": "US01"})
    return post(
        erp_client,
        "projects",
        {"client_id": client["id"], "name": "Data platform", "legal_entity": "US01", "code": "NW"},
    )


def test_missing_or_wrong_api_key_is_401(sandbox_credentials):
    assert Client().get(f"{API}/clients").status_code == 401
    wrong = Client(HTTP_X_API_KEY="nope").get(f"{API}/clients")
    assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"


def test_client_and_project_crud(erp_client, erp_project):
    assert erp_project["status"] == "active" and erp_project["billing_type"] == "time_and_materials"
    url = f"{API}/projects/{erp_project['id']}"
    assert erp_client.get(url).json()["code"] == "NW"
    closed = erp_client.patch(url, {"status": "closed"}, content_type="application/json").json()
    assert closed["status"] == "closed"
    bad = erp_client.patch(url, {"status": "paused"}, content_type="application/json")
    assert bad.status_code == 422 and "status" in bad.json()["fields"]
    assert erp_client.get(f"{API}/projects", {"code": "NW"}).json()["results"][0]["id"] == erp_project["id"]


def test_time_entry_posting_is_idempotent_by_key(erp_client, erp_project):
    body = {
        "project_id": erp_project["id"],
        "date": "2025-03-03",
        "hours": "7.5",
        "bill_rate": 200,
        "role": "Consultant",
    }
    first = erp_client.post(f"{API}/time-entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="te-1")
    second = erp_client.post(f"{API}/time-entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="te-1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["amount"] == "1500.00" and first.json()["hours"] == "7.50"
    # a key in the body works too
    third = post(erp_client, "time-entries", {**body, "idempotency_key": "te-1"}, status=200)
    assert third["id"] == first.json()["id"]


def test_nothing_is_posted_to_a_closed_project(erp_client, erp_project):
    erp_client.patch(f"{API}/projects/{erp_project['id']}", {"status": "closed"}, content_type="application/json")
    response = erp_client.post(
        f"{API}/time-entries",
        {"project_id": erp_project["id"], "date": "2025-03-03", "hours": "1"},
        content_type="application/json",
    )
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    billing = erp_client.post(
        f"{API}/billing-events", {"project_id": erp_project["id"], "amount": "100"}, content_type="application/json"
    )
    assert billing.status_code == 409
    assert not SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type="time-entries").exists()


def test_time_entry_reversal_posts_the_negative_once(erp_client, erp_project):
    entry = post(erp_client, "time-entries", {"project_id": erp_project["id"], "date": "2025-03-03", "hours": "2"})
    reversal = erp_client.post(f"{API}/time-entries/{entry['id']}/reverse")
    again = erp_client.post(f"{API}/time-entries/{entry['id']}/reverse")
    assert (reversal.status_code, again.status_code) == (201, 200)
    assert reversal.json()["hours"] == "-2.00" and reversal.json()["reverses_id"] == entry["id"]
    assert erp_client.get(f"{API}/time-entries/{entry['id']}").json()["status"] == "reversed"


def test_invoice_moves_draft_posted_paid_only_forward(erp_client, erp_project):
    invoice = post(erp_client, "invoices", {"client_id": erp_project["client_id"], "amount": "1000"})
    assert invoice["status"] == "draft" and invoice["number"].startswith("INV-")
    url = f"{API}/invoices/{invoice['id']}"
    assert erp_client.post(f"{url}/pay").status_code == 409
    assert erp_client.post(f"{url}/post").json()["status"] == "posted"
    assert erp_client.patch(url, {"amount": "5"}, content_type="application/json").status_code == 409
    paid = erp_client.patch(url, {"status": "paid"}, content_type="application/json").json()
    assert paid["status"] == "paid" and paid["paid_at"]
    assert erp_client.delete(url).status_code == 409
    assert erp_client.get(f"{API}/invoices", {"status": "paid"}).json()["results"][0]["id"] == invoice["id"]


def test_updated_since_and_cursor_page_without_gap_or_duplicate(erp_client):
    # given 25 clients changed recently (some sharing a timestamp) and 3 long ago
    recent = timezone.now() - dt.timedelta(minutes=5)
    ids = []
    for index in range(28):
        client = post(erp_client, "clients", {"name": f"C{index}", "legal_entity": "US01"})
        stamp = recent - dt.timedelta(days=3) if index < 3 else recent + dt.timedelta(seconds=index // 3)
        SandboxRecord.objects.filter(system=SandboxSystem.ERP, external_id=str(client["id"])).update(updated_at=stamp)
        ids.append(client["id"])
    # when paged 10 at a time since `recent`
    seen, cursor, pages = [], "", 0
    while True:
        params = {"updated_since": recent.isoformat(), "limit": 10, **({"cursor": cursor} if cursor else {})}
        body = erp_client.get(f"{API}/clients", params).json()
        pages += 1
        seen += [c["id"] for c in body["results"]]
        cursor = body["next_cursor"]
        if not body["has_more"]:
            break
    # then three pages return each exactly once, in (updated_at, id) order
    assert pages == 3
    assert seen == ids[3:]


def test_validation_errors_name_the_fields(erp_client):
    response = erp_client.post(f"{API}/projects", {"client_id": 4242, "bogus": 1}, content_type="application/json")
    fields = response.json()["fields"]
    assert response.status_code == 422
    assert set(fields) == {"client_id", "bogus", "name", "legal_entity"}
