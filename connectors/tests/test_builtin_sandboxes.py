"""What each built-in HTTP connector does beyond the contract, against its sandbox over real HTTP.

Harvest approval and deletion, Graph workspace members and archiving, the ERP's reversal of posted
time, Salesforce deletion and an expired query locator, and the generic connector's paging styles.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache

from connectors.choices import SystemRole
from connectors.http import TerminalConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import connector_for
from connectors.tests.contract_fixtures import harness, new_key
from sandbox.models import SandboxRecord

__all__ = ["harness"]

LIVE = pytest.mark.django_db(transaction=True)


def _param(name: str) -> Any:
    return pytest.mark.parametrize("harness", [pytest.param(name, marks=LIVE, id=name)], indirect=True)


@_param("harvest_psa")
def test_harvest_time_entry_is_approved_locked_and_voided_once_unapproved(harness):
    # given a time entry the hub posts to the PSA
    connector = harness.connector()
    user = harness.records("users").first()
    project = harness.records("projects").first()
    key = new_key()
    payload = {"user_id": int(user.external_id), "project_id": int(project.external_id), "spent_date": "2025-03-03"}
    entry = connector.upsert("time_entry", {**payload, "hours": 2.5, "notes": "Workshop"}, key)
    # when it is approved
    approved = connector.approve(entry.external_id, approver_id=int(user.external_id))
    assert approved["approval_status"] == "approved"
    # then Harvest refuses to delete it (terminal), until it is unapproved
    with pytest.raises(TerminalConnectorError) as caught:
        connector.void("time_entry", entry.external_id)
    assert caught.value.status_code == 422
    connector.approve(entry.external_id, approve=False)
    connector.void("time_entry", entry.external_id)
    assert SandboxRecord.objects.get(system="psa", external_id=entry.external_id).deleted
    # and voiding it again is a no-op (compensation may run twice)
    connector.void("time_entry", entry.external_id)


@_param("harvest_psa")
def test_harvest_upsert_of_a_found_record_patches_only_what_changed(harness):
    connector = harness.connector()
    key = new_key()
    created = connector.upsert("client", {"name": "Acme", "currency": "USD"}, key)
    # when the same key comes with a changed name
    updated = connector.upsert("client", {"name": "Acme Ltd", "currency": "USD"}, key)
    # then the one record is updated in place
    assert updated.external_id == created.external_id and not updated.created
    assert harness.records("clients", idempotency_key=key).get().data["name"] == "Acme Ltd"


@_param("collaboration_suite")
def test_a_workspace_gets_its_members_once_and_is_archived_on_void(harness):
    # given the directory's users
    connector = harness.connector()
    users = list(harness.records("users").order_by("id")[:2])
    members = [users[0].data["userPrincipalName"], users[1].external_id]
    key = new_key("project")
    # when the workspace is upserted twice with its members
    first = connector.upsert("project", {"name": "Apollo", "code": "AP-01", "members": members}, key)
    second = connector.upsert("project", {"name": "Apollo", "code": "AP-01", "members": members}, key)
    # then one group exists, named from the key, with each member once
    assert first.created and not second.created and first.external_id == second.external_id
    group = harness.records("groups").get(external_id=first.external_id)
    assert group.data["mailNickname"] == connector.mail_nickname(key)
    assert sorted(group.data["members"]) == sorted(u.external_id for u in users)
    # when the activation is compensated
    connector.void("project", first.external_id)
    # then the team is archived, not deleted
    group.refresh_from_db()
    assert group.data["isArchived"] is True and not group.deleted


@_param("sandbox_erp")
def test_erp_posted_time_is_kept_on_retry_and_reversed_on_void(harness):
    # given the active project of the demo
    connector = harness.connector()
    project = harness.records("projects", data__code="NW-DATA-01").get()
    key = new_key("time")
    payload = {"project_id": int(project.external_id), "date": "2025-03-03", "hours": "7.5", "bill_rate": "200"}
    posted = connector.upsert("time_entry", payload, key)
    # when the same key comes again with other hours
    again = connector.upsert("time_entry", {**payload, "hours": "8"}, key)
    # then the posted entry is kept as it is (a correction is a reversal plus a new entry)
    assert again.external_id == posted.external_id and not again.created
    assert connector.get("time_entry", posted.external_id)["hours"] == "7.50"
    # when it is voided
    connector.void("time_entry", posted.external_id)
    # then a reversal cancels it, and voiding again does not reverse twice
    connector.void("time_entry", posted.external_id)
    reversal = harness.records("time-entries", data__reverses_id=int(posted.external_id)).get()
    assert reversal.data["hours"] == "-7.50"
    assert connector.get("time_entry", posted.external_id)["status"] == "reversed"


@_param("sandbox_erp")
def test_erp_void_closes_a_project(harness):
    connector = harness.connector()
    client = harness.records("clients").first()
    project = connector.upsert("project", {"client_id": int(client.external_id), "name": "Closing"}, new_key())
    connector.void("project", project.external_id)
    assert connector.get("project", project.external_id)["status"] == "closed"


@_param("salesforce_crm")
def test_salesforce_void_deletes_and_an_expired_query_locator_is_requeried(harness):
    connector = harness.connector()
    key = new_key()
    account = connector.upsert("client", {"Name": "Deleted Inc"}, key)
    # when the account is voided (twice)
    connector.void("client", account.external_id)
    connector.void("client", account.external_id)
    # then it is deleted and no longer found
    assert SandboxRecord.objects.get(system="crm", external_id=account.external_id).deleted
    assert connector.find("client", key) is None
    # given a pull in the middle of a query
    harness.seed(10)
    first = connector.fetch_changes("client", None)
    assert first.has_more
    # when the query locator expires (the sandbox keeps it in the cache, like Salesforce for 15 minutes)
    cache.clear()
    rest = []
    cursor = first.next_cursor
    while True:
        batch = connector.fetch_changes("client", cursor)
        rest += batch.records
        cursor = batch.next_cursor
        if not batch.has_more:
            break
    # then the pull goes on from the last change read, without a gap
    seen = {r["id"] for r in first.records + rest}
    assert seen == harness.all_ids()


# --- the generic connector's paging styles, against a scripted API --------------------------------------

ROWS = [{"id": n, "updated_at": f"2025-01-01T00:00:{n:02d}Z"} for n in range(1, 11)]


def _generic(url: str, style: str) -> Any:
    system = ConnectedSystem(
        name="Generic",
        slug=f"generic-{style}",
        role=SystemRole.ERP,
        connector_type="generic_rest",
        base_url=url,
        settings={
            "auth_mode": "bearer",
            "endpoints": {"project": {"path": "/items", "updated_since_param": "since", "results_path": "data"}},
            "pagination": {"style": style, "page_size": 4},
        },
    )
    system.credentials = {"bearer_token": "generic-token-123456"}
    return connector_for(system)


@pytest.mark.parametrize("style", ["page", "offset", "link"])
def test_generic_rest_pages_by_page_offset_and_link_header(local_server, style):
    # given an API paging in the style
    def respond(request):
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        since = query.get("since", "")
        rows = [r for r in ROWS if r["updated_at"] >= since]
        if style == "page":
            start = (int(query["page"]) - 1) * int(query["per_page"])
        elif style == "offset":
            start = int(query["offset"])
        else:
            start = int(query.get("start", 0))
        size = int(query.get("per_page") or query.get("limit"))
        headers = {}
        if style == "link" and start + size < len(rows):
            headers["Link"] = f'<{local_server.url}/items?start={start + size}&per_page={size}>; rel="next"'
        return 200, {"data": rows[start : start + size]}, headers

    local_server.route_fn("GET", "/items", respond)
    connector = _generic(local_server.url, style)
    # when every page is fetched
    seen, cursor, pages = [], None, 0
    while True:
        batch = connector.fetch_changes("project", cursor)
        seen += [r["id"] for r in batch.records]
        cursor, pages = batch.next_cursor, pages + 1
        if not batch.has_more:
            break
    # then each record came once, and the next pass asks for changes since the newest one seen
    assert seen == [str(n) for n in range(1, 11)] and pages == 3
    assert '"since":"2025-01-01T00:00:10Z"' in cursor
    again = connector.fetch_changes("project", cursor)
    assert [r["id"] for r in again.records] == ["10"]
    assert all(r.headers.get("Authorization") == "Bearer generic-token-123456" for r in local_server.requests)
