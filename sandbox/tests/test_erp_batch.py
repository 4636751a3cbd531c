"""The sandbox ERP's batch endpoint: many time entries in one call, once per idempotency key, a result per item."""

from __future__ import annotations

import pytest

from sandbox.models import SandboxRecord
from sandbox.tests.test_erp import post

pytestmark = pytest.mark.django_db


@pytest.fixture
def active_project(erp_client) -> dict:
    client = post(erp_client, "clients", {"name": "Northwind", "legal_entity": "US01"})
    return post(erp_client, "projects", {"client_id": client["id"], "name": "Data platform", "legal_entity": "US01"})


def _entries() -> int:
    return SandboxRecord.objects.filter(system="erp", object_type="time-entries").count()


def _item(project: dict, key: str, **fields) -> dict:
    return {"idempotency_key": key, "project_id": project["id"], "date": "2026-11-02", "hours": "7.5", **fields}


def test_a_batch_creates_each_new_key_once_and_answers_a_result_per_item(erp_client, active_project):
    # given one entry already posted under key k-1
    post(erp_client, "time-entries/batch", {"items": [_item(active_project, "k-1", bill_rate=200)]}, status=200)
    # when a batch repeats k-1, adds k-2 twice and k-3, with one invalid item in between
    items = [
        _item(active_project, "k-1", bill_rate=200),
        _item(active_project, "k-2"),
        _item(active_project, "k-bad", hours="seven"),
        _item(active_project, "k-2"),
        _item(active_project, "k-3", bill_rate=100),
    ]
    results = post(erp_client, "time-entries/batch", {"items": items}, status=200)["results"]
    # then k-1 is answered with the stored entry, k-2 and k-3 are created once, and the bad item is refused
    assert [r["status"] for r in results] == [200, 201, 422, 200, 201]
    assert results[1]["record"]["id"] == results[3]["record"]["id"]
    assert "hours" in results[2]["fields"]
    assert results[4]["record"]["amount"] == "750.00"
    assert _entries() == 3


def test_an_entry_on_a_closed_project_is_refused_and_the_rest_of_the_batch_is_stored(erp_client, active_project):
    # given a closed project next to the active one
    closed = post(
        erp_client,
        "projects",
        {"client_id": active_project["client_id"], "name": "Old", "legal_entity": "US01", "status": "closed"},
    )
    # when a batch posts to both
    results = post(
        erp_client,
        "time-entries/batch",
        {"items": [_item(closed, "c-1"), _item(active_project, "a-1")]},
        status=200,
    )["results"]
    # then only the entry on the active project is stored
    assert [r["status"] for r in results] == [409, 201]
    assert "closed" in results[0]["detail"]
    assert _entries() == 1


def test_a_malformed_batch_stores_nothing(erp_client, active_project):
    # when the items lack keys or are not a list
    missing_key = post(erp_client, "time-entries/batch", {"items": [{"project_id": active_project["id"]}]}, status=400)
    not_a_list = post(erp_client, "time-entries/batch", {"items": "all"}, status=400)
    # then the call is refused as a whole and nothing is stored
    assert missing_key["error"] == not_a_list["error"] == "bad_request"
    assert _entries() == 0


def test_an_entry_dated_in_a_period_the_erp_closed_is_refused_alone(erp_client, active_project):
    # given the ERP's calendar of US01: October closed, November open
    post(
        erp_client,
        "periods",
        {
            "name": "2026-10",
            "legal_entity": "US01",
            "start_date": "2026-10-01",
            "end_date": "2026-10-31",
            "status": "closed",
        },
    )
    post(
        erp_client,
        "periods",
        {"name": "2026-11", "legal_entity": "US01", "start_date": "2026-11-01", "end_date": "2026-11-30"},
    )
    # when a batch posts one entry into each, and a single create posts into October
    results = post(
        erp_client,
        "time-entries/batch",
        {"items": [_item(active_project, "p-1", date="2026-10-30"), _item(active_project, "p-2")]},
        status=200,
    )["results"]
    single = post(
        erp_client,
        "time-entries",
        {"project_id": active_project["id"], "date": "2026-10-15", "hours": "1"},
        status=409,
    )
    # then only the November entry is stored; the ERP names the closed period
    assert [r["status"] for r in results] == [409, 201]
    assert "2026-10" in results[0]["detail"] and "closed" in results[0]["detail"]
    assert "2026-10" in single["detail"]
    assert _entries() == 1
