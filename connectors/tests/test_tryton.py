"""The Tryton connector against a real Tryton 8.2 (tryton/setup.sh builds it, the fixture serves a fresh copy).

Run: make test-tryton
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from decimal import Decimal

import pytest

from connectors.http import RetryableConnectorError, TerminalConnectorError
from connectors.tests.tryton_fixtures import *  # noqa: F403
from connectors.tryton import TrytonAuthError, TrytonConnector, TrytonRpcError, _sessions, sessions_clear

pytestmark = pytest.mark.tryton

# What every timesheet line of these tests carries besides its own fields: the employee it is booked to (the hub
# always names one; Tryton's template has the firm's people, see tryton/setup_employees.py).
LINE: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _line_employee(tryton_server: TrytonServer) -> None:  # noqa: F405
    LINE["employee_id"] = tryton_server.ids["employee"]


def _key(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _client_and_project(connector: TrytonConnector, *, tasks: list[str] | None = None) -> tuple[int, dict]:
    client = connector.upsert("client", {"name": f"Client {uuid.uuid4().hex[:6]}", "city": "Springfield"}, _key("c"))
    project = connector.upsert(
        "project",
        {"name": f"Project {uuid.uuid4().hex[:6]}", "client_id": client.external_id, "tasks": tasks or []},
        _key("p"),
    )
    return int(client.external_id), project.payload


def _rpc_calls(caplog: pytest.LogCaptureFixture, method: str) -> int:
    return sum(1 for r in caplog.records if r.getMessage() == "tryton rpc" and getattr(r, "rpc_method", "") == method)


def _all_invoice_changes(connector: TrytonConnector, cursor: str | None) -> tuple[list[dict], str | None]:
    records: list[dict] = []
    while True:
        batch = connector.fetch_changes("invoice", cursor)
        records.extend(batch.records)
        cursor = batch.next_cursor
        if not batch.has_more:
            return records, cursor


def test_health_check_logs_in_as_the_hub_user(tryton_connector):
    # given a connector with the hub user's credentials / when the connection is tested twice
    tryton_connector.health_check()
    result = tryton_connector.health_check()
    # then it logged in, names the server version, and the session it holds works
    assert result.ok is True
    assert tryton_connector.client.execute("res.user", "search_count", [("login", "=", "hub")]) == 1
    assert "Tryton 8.2" in result.message


def test_unknown_database_is_terminal(tryton_server, make_tryton_system):
    # given a system pointing at a database the server does not serve
    connector = TrytonConnector(
        system=make_tryton_system(database="no_such_db"),
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
    )
    # when / then logging in fails terminally, not as a retry
    with pytest.raises(TerminalConnectorError):
        connector.health_check()


def test_a_user_error_answered_with_http_200_is_terminal(tryton_connector):
    # given a time entry on a project that does not exist
    # when it is posted / then Tryton's error array becomes a terminal error
    with pytest.raises(TerminalConnectorError):
        tryton_connector.upsert("time_entry", {**LINE, "project_id": 999999, "date": "2026-01-05", "hours": 1}, _key())
    with pytest.raises(TrytonRpcError) as caught:
        tryton_connector.client.execute("project.work", "write", [999999], {"name": "x"})
    assert not caught.value.retryable


def test_client_and_project_are_created_once_per_key(tryton_connector, tryton_server):
    # given a client and a project posted with their keys
    client_key, project_key = _key("c"), _key("p")
    client = tryton_connector.upsert("client", {"name": "Acme Ltd", "street": "1 Main St"}, client_key)
    project_payload = {"name": "Acme rollout", "client_id": client.external_id, "tasks": ["Design", "Build"]}
    project = tryton_connector.upsert("project", project_payload, project_key)
    # when both are posted again, the client renamed
    client_again = tryton_connector.upsert("client", {"name": "Acme Limited"}, client_key)
    project_again = tryton_connector.upsert("project", project_payload, project_key)
    # then the same records answer, updated, and the project is billed on timesheets at the product's price
    assert client.created and not client_again.created
    assert client_again.external_id == client.external_id
    assert tryton_connector.get("client", client.external_id)["name"] == "Acme Limited"
    assert project.created and not project_again.created
    assert project_again.external_id == project.external_id
    assert project.payload["timesheet_work_id"] in project.payload["timesheet_works"]
    assert sorted(t["name"] for t in project.payload["tasks"]) == ["Build", "Design"]
    assert all(t["timesheet_work_id"] for t in project.payload["tasks"])
    record = tryton_connector.get("project", project.external_id)
    assert record["project_invoice_method"] == "timesheet"
    assert Decimal(record["list_price"]) == Decimal(tryton_server.ids["list_price"])
    assert tryton_connector.find("project", project_key)["id"] == int(project.external_id)
    assert tryton_connector.find("client", _key("missing")) is None


def test_100_time_entries_are_posted_in_one_call_and_read_back(tryton_connector, caplog):
    # given a project and 100 approved time entries
    _, project = _client_and_project(tryton_connector)
    today = dt.date.today()
    items = [
        (
            {**LINE, "project_id": project["id"], "date": today.isoformat(), "hours": "1.5", "note": f"entry {n}"},
            _key("t"),
        )
        for n in range(100)
    ]
    # when they are posted as one batch
    caplog.set_level(logging.INFO, logger="connectors.tryton")
    caplog.clear()
    results = tryton_connector.upsert_many("time_entry", items)
    # then one create call made 100 lines, in input order, and they read back with their keys
    assert _rpc_calls(caplog, "model.timesheet.line.create") == 1
    assert len(results) == 100 and all(r.created for r in results)
    assert len({r.external_id for r in results}) == 100
    lines = tryton_connector.client.search_read(
        "timesheet.line", [("work", "=", project["timesheet_work_id"])], ["duration", "description"]
    )
    assert len(lines) == 100
    assert sum((line["duration"] for line in lines), dt.timedelta()) == dt.timedelta(hours=150)
    first = tryton_connector.get("time_entry", results[0].external_id)
    # the description reads as the PSA wrote it; the hub's key rides at its end
    assert first["description"] == f"entry 0 [hub:{items[0][1]}]"
    assert first["duration"] == 5400.0
    assert tryton_connector.find("time_entry", items[42][1])["id"] == int(results[42].external_id)


def test_a_time_entry_posted_twice_with_the_same_key_exists_once(tryton_connector):
    # given a project and one time entry key
    _, project = _client_and_project(tryton_connector)
    key = _key("dup")
    entry = {**LINE, "project_id": project["id"], "date": dt.date.today().isoformat(), "hours": 2}
    # when the entry is posted, posted again, and sent twice more inside a batch
    first = tryton_connector.upsert("time_entry", entry, key)
    second = tryton_connector.upsert("time_entry", entry, key)
    batch = tryton_connector.upsert_many("time_entry", [(entry, key), (entry, key), (entry, _key("other"))])
    # then one line carries the key and every answer names it
    lines = tryton_connector.client.search_read(
        "timesheet.line", [("description", "=", f"hub:{key}")], ["id", "duration"]
    )
    assert len(lines) == 1
    assert first.created and not second.created
    assert {first.external_id, second.external_id, batch[0].external_id, batch[1].external_id} == {str(lines[0]["id"])}
    assert [r.created for r in batch] == [False, False, True]


def test_a_key_with_like_wildcards_matches_only_itself(tryton_connector):
    # given two entries whose keys differ where a LIKE wildcard would match
    _, project = _client_and_project(tryton_connector)
    entry = {**LINE, "project_id": project["id"], "date": dt.date.today().isoformat(), "hours": 1}
    suffix = uuid.uuid4().hex[:8]
    a = tryton_connector.upsert("time_entry", entry, f"a_b%{suffix}")
    # when a key that the first one's pattern would match is posted
    b = tryton_connector.upsert("time_entry", entry, f"axbyy{suffix}")
    # then it is a new line
    assert a.created and b.created and a.external_id != b.external_id


def test_a_corrected_entry_is_updated_in_place(tryton_connector):
    # given a posted entry
    _, project = _client_and_project(tryton_connector)
    key = _key("fix")
    entry = {**LINE, "project_id": project["id"], "date": dt.date.today().isoformat(), "hours": 2}
    posted = tryton_connector.upsert("time_entry", entry, key)
    # when it is posted again with other hours
    corrected = tryton_connector.upsert("time_entry", {**entry, "hours": 3}, key)
    # then the same line now says 3 hours
    assert corrected.external_id == posted.external_id and corrected.payload["updated"] is True
    assert tryton_connector.get("time_entry", posted.external_id)["duration"] == 3 * 3600.0


def test_invoice_post_and_pay_show_up_in_fetch_changes(tryton_connector):
    # given a project with 3 x 2.5 hours and the invoice changes read so far
    client_id, project = _client_and_project(tryton_connector, tasks=["Task A"])
    today = dt.date.today().isoformat()
    task_work = project["tasks"][0]["timesheet_work_id"]
    tryton_connector.upsert_many(
        "time_entry",
        [
            ({**LINE, "project_id": project["id"], "date": today, "hours": 2.5}, _key()),
            ({**LINE, "project_id": project["id"], "date": today, "hours": 2.5}, _key()),
            ({**LINE, "work_id": task_work, "date": today, "hours": 2.5}, _key()),
        ],
    )
    _, cursor = _all_invoice_changes(tryton_connector, None)
    # when the project is invoiced
    (invoice_id,) = tryton_connector.invoice_project(project["id"])
    drafts, cursor = _all_invoice_changes(tryton_connector, cursor)
    # then the draft invoice appears with its project and amount
    (draft,) = [r for r in drafts if r["id"] == invoice_id]
    assert draft["state"] == "draft" and draft["party"] == client_id
    assert Decimal(draft["total_amount"]) == Decimal("750.00")
    assert draft["projects"] == sorted([project["id"], project["tasks"][0]["id"]])
    assert tryton_connector.invoice_project(project["id"]) == []  # nothing left to invoice

    # when it is posted
    posted = tryton_connector.post_invoice(invoice_id)
    changes, cursor = _all_invoice_changes(tryton_connector, cursor)
    # then fetch_changes returns it once more, posted and numbered
    assert posted["state"] == "posted" and posted["number"]
    assert [(r["id"], r["state"]) for r in changes] == [(invoice_id, "posted")]

    # when it is paid
    paid = tryton_connector.pay_invoice(invoice_id)
    changes, cursor = _all_invoice_changes(tryton_connector, cursor)
    # then the next page says paid, and a page after that is empty with the same cursor
    assert paid["state"] == "paid" and paid["reconciled"]
    assert [(r["id"], r["state"]) for r in changes] == [(invoice_id, "paid")]
    empty = tryton_connector.fetch_changes("invoice", cursor)
    assert empty.records == [] and empty.next_cursor == cursor and not empty.has_more


def test_fetch_changes_pages_without_gaps_or_repeats(tryton_server, make_tryton_system):
    # given a connector with pages of 2 invoices and a few invoices in the database
    connector = TrytonConnector(
        system=make_tryton_system(page_size=2),
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
    )
    for _ in range(3):
        _, project = _client_and_project(connector)
        connector.upsert(
            "time_entry", {**LINE, "project_id": project["id"], "date": dt.date.today(), "hours": 1}, _key()
        )
        connector.invoice_project(project["id"])
    # when every page is read from the start
    pages, cursor, seen = 0, None, []
    while True:
        batch = connector.fetch_changes("invoice", cursor)
        pages += 1
        seen.extend(r["id"] for r in batch.records)
        assert len(batch.records) <= 2
        cursor = batch.next_cursor
        if not batch.has_more:
            break
    # then each invoice came exactly once, over several pages
    assert pages >= 2
    assert len(seen) == len(set(seen)) >= 3


def test_void_deletes_an_uninvoiced_line_and_refuses_an_invoiced_one(tryton_connector):
    # given two entries on a project, one of them then invoiced
    _, project = _client_and_project(tryton_connector)
    today = dt.date.today().isoformat()
    invoiced = tryton_connector.upsert(
        "time_entry", {**LINE, "project_id": project["id"], "date": today, "hours": 1}, _key()
    )
    tryton_connector.invoice_project(project["id"])
    open_entry = tryton_connector.upsert(
        "time_entry", {**LINE, "project_id": project["id"], "date": today, "hours": 1}, _key()
    )
    # when both are voided
    tryton_connector.void("time_entry", open_entry.external_id)
    tryton_connector.void("time_entry", open_entry.external_id)  # twice is a no-op
    with pytest.raises(TerminalConnectorError) as caught:
        tryton_connector.void("time_entry", invoiced.external_id)
    # then the open line is gone and the invoiced one stays, with a hint for finance
    assert (
        tryton_connector.client.search_read("timesheet.line", [("id", "=", int(open_entry.external_id))], ["id"]) == []
    )
    assert tryton_connector.get("time_entry", invoiced.external_id)["invoice_line"]
    assert "credit" in caught.value.hint


def test_an_expired_session_is_renewed_transparently(tryton_connector, caplog):
    # given a logged-in connector whose session Tryton no longer knows
    tryton_connector.health_check()
    (session,) = _sessions.values()
    session.key = "0" * 64
    caplog.set_level(logging.INFO, logger="connectors.tryton")
    caplog.clear()
    # when it makes a call
    count = tryton_connector.client.execute("party.party", "search_count", [])
    # then the call got a 401, logged in again and succeeded
    assert count >= 1
    assert _rpc_calls(caplog, "common.db.login") == 1


def test_a_fresh_session_call_logs_in_again_when_the_session_is_idle(tryton_connector, caplog):
    # given a project invoiced by a session idle for longer than Tryton's fresh-session window
    _, project = _client_and_project(tryton_connector)
    tryton_connector.upsert(
        "time_entry", {**LINE, "project_id": project["id"], "date": dt.date.today(), "hours": 1}, _key()
    )
    (invoice_id,) = tryton_connector.invoice_project(project["id"])
    (session,) = _sessions.values()
    session.last_used -= 10_000
    caplog.set_level(logging.INFO, logger="connectors.tryton")
    caplog.clear()
    # when the invoice is posted
    posted = tryton_connector.post_invoice(invoice_id)
    # then the client logged in first, and the post went through without a 401
    assert posted["state"] == "posted"
    assert _rpc_calls(caplog, "common.db.login") == 1
    assert not [r for r in caplog.records if getattr(r, "outcome", "") == "http 401"]


def test_a_stopped_server_is_retryable(make_tryton_system, tryton_server):
    # given a system on a port where nothing listens
    system = make_tryton_system()
    system.base_url = "http://127.0.0.1:9"
    connector = TrytonConnector(system=system, credentials={"user": "hub", "password": tryton_server.hub_password})
    # when / then the connection failure is retryable
    with pytest.raises(RetryableConnectorError):
        connector.health_check()


def test_a_full_run_logs_no_password_or_session_key(tryton_server, make_tryton_system, caplog):
    # given every logger at DEBUG, and a full run: failed login, health check, client, project, time, invoice, post
    caplog.set_level(logging.DEBUG)
    sessions_clear()
    # A login of its own: a failed login slows down the next logins of the same user (Tryton's rate limit).
    bad = TrytonConnector(
        system=make_tryton_system(),
        credentials={"user": "nobody-" + uuid.uuid4().hex[:6], "password": "not-the-password-9"},
    )
    with pytest.raises(TrytonAuthError):
        bad.health_check()
    connector = TrytonConnector(
        system=make_tryton_system(),
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
    )
    connector.health_check()
    _, project = _client_and_project(connector)
    connector.upsert_many(
        "time_entry",
        [({**LINE, "project_id": project["id"], "date": dt.date.today(), "hours": 1}, _key()) for _ in range(3)],
    )
    (invoice_id,) = connector.invoice_project(project["id"])
    connector.post_invoice(invoice_id)
    (session,) = _sessions.values()
    token = base64.b64encode(f"{session.login}:{session.user_id}:{session.key}".encode()).decode()
    # when every captured record is rendered with all its attributes
    text = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    # then there were calls logged, and no secret in any of them
    assert "common.db.login" in text and "model.account.invoice.post" in text
    reprs = repr(connector) + repr(connector.client) + repr(session)
    for secret in (tryton_server.hub_password, "not-the-password-9", session.key, token):
        assert secret not in text
        assert secret not in reprs


def test_health_check_with_a_wrong_password_fails_as_terminal_auth(tryton_server, make_tryton_system):
    # Last in the module: Tryton delays every later login of a user after a failed one (rate limiting).
    # given a connector whose password is wrong
    connector = TrytonConnector(
        system=make_tryton_system(), credentials={"user": tryton_server.hub_login, "password": "wrong-password-1"}
    )
    # when the connection is tested
    with pytest.raises(TrytonAuthError) as caught:
        connector.health_check()
    # then the failure is terminal, says 401, and does not echo the password
    error = caught.value
    assert isinstance(error, TerminalConnectorError)
    assert not error.retryable
    assert error.status_code == 401
    assert "wrong-password-1" not in str(error) + error.hint


def test_a_line_is_booked_to_its_own_employee_with_the_psa_description_and_never_to_a_default(
    tryton_connector, tryton_server
):
    # given a project and two of the firm's people as Tryton employees
    _, project = _client_and_project(tryton_connector)
    people = tryton_server.ids["employees"][str(tryton_server.ids["company"])]
    today = dt.date.today()
    chloe, diego = _key("chloe"), _key("diego")

    # when each posts a line with a description, and a line names no employee
    tryton_connector.upsert_many(
        "time_entry",
        [
            (
                {
                    "project_id": project["id"],
                    "employee_id": people["Chloe Martin"],
                    "date": today.isoformat(),
                    "hours": 2,
                    "description": "Data model review",
                },
                chloe,
            ),
            (
                {
                    "project_id": project["id"],
                    "employee_id": str(people["Diego Alvarez"]),
                    "date": today.isoformat(),
                    "hours": 1,
                    "description": "  Steering\ncommittee ",
                },
                diego,
            ),
        ],
    )
    with pytest.raises(TerminalConnectorError) as refused:
        tryton_connector.upsert("time_entry", {"project_id": project["id"], "date": today, "hours": 1}, _key())

    # then each line carries its person's employee and reads as the PSA wrote it, the key at its end
    lines = {
        row["description"]: row
        for row in tryton_connector.client.search_read(
            "timesheet.line", [("work", "=", project["timesheet_work_id"])], ["employee", "description", "duration"]
        )
    }
    assert lines[f"Data model review [hub:{chloe}]"]["employee"] == people["Chloe Martin"]
    assert lines[f"Steering committee [hub:{diego}]"]["employee"] == people["Diego Alvarez"]
    # and the line without an employee was refused, saying what to do, and not stored
    assert "No Tryton employee" in str(refused.value) and "Resources" in refused.value.hint
    assert len(lines) == 2
    # and the connector lists the employees a person picks from
    listed = {row["name"]: row["id"] for row in tryton_connector.employees_list()}
    assert listed["Chloe Martin"] == str(people["Chloe Martin"])


def test_a_line_tagged_the_older_way_is_still_found_and_corrected_in_place(tryton_connector):
    # given a line written before descriptions were kept: "hub:<key> <note>"
    _, project = _client_and_project(tryton_connector)
    key = _key("old")
    (work,) = tryton_connector.client.read("project.work", [project["id"]], ["timesheet_works"])
    (line_id,) = tryton_connector.client.create(
        "timesheet.line",
        [
            {
                "company": tryton_connector._company(),
                "employee": LINE["employee_id"],
                "work": work["timesheet_works"][0],
                "date": dt.date.today(),
                "duration": dt.timedelta(hours=1),
                "description": f"hub:{key} old note",
            }
        ],
    )
    # when the same key is posted again with the description and other hours
    entry = {**LINE, "project_id": project["id"], "date": dt.date.today().isoformat(), "hours": 2, "description": "New"}
    again = tryton_connector.upsert("time_entry", entry, key)
    # then the old line is found and corrected in place, now in the readable form
    assert again.external_id == str(line_id) and not again.created
    row = tryton_connector.get("time_entry", str(line_id))
    assert row["description"] == f"New [hub:{key}]" and row["duration"] == 7200.0
    assert tryton_connector.find("time_entry", key)["id"] == line_id
