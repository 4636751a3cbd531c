"""The connector contract: the same tests, parametrized over every connector and its real counterpart.

The sandbox CRM, PSA, collaboration suite and ERP are real HTTP apps served by `live_server` (with the
demo credentials of `sandbox_demo_seed()`), Tryton is the real local server (params marked `tryton`)
and the CSV drop reads a real folder. A test takes part for the connectors whose capabilities include
the operation it checks; records are counted in the counterpart itself, not through the connector.
"""

from __future__ import annotations

import logging

import pytest

from connectors.http import ConnectorError, RetryableConnectorError, TerminalConnectorError
from connectors.services import connected_system_test_connection
from connectors.tests.contract_fixtures import PAGE_SIZE, PAGES, RETRY_AFTER, SLOW_ANSWER, harness, new_key
from connectors.tests.tryton_fixtures import *  # noqa: F403  (tryton_server, make_tryton_system)

__all__ = ["harness"]

# The sandboxes run in the live server's thread: those params need committed rows (a transactional test).
LIVE = pytest.mark.django_db(transaction=True)
CRM, PSA, COLLAB, ERP, GENERIC = (
    pytest.param(name, marks=LIVE, id=name)
    for name in ("salesforce_crm", "harvest_psa", "collaboration_suite", "sandbox_erp", "generic_rest")
)
TRYTON = pytest.param("tryton_erp", marks=pytest.mark.tryton, id="tryton_erp")
HTTP_CONNECTORS = [CRM, PSA, COLLAB, ERP, GENERIC]
UPSERTING = [*HTTP_CONNECTORS, TRYTON]
FETCHING = [CRM, PSA, ERP, GENERIC, "csv_drop", TRYTON]
# What the counterpart answers → (the error kind, the status the error must carry).
FAULTS = {
    "400": ({"error_every_nth": 1, "error_status": 400}, TerminalConnectorError, 400),
    "401": ({"error_every_nth": 1, "error_status": 401}, TerminalConnectorError, 401),
    "404": ({"error_every_nth": 1, "error_status": 404}, TerminalConnectorError, 404),
    "409": ({"error_every_nth": 1, "error_status": 409}, TerminalConnectorError, 409),
    "429": ({"rate_limit_every_nth": 1, "retry_after_seconds": RETRY_AFTER}, RetryableConnectorError, 429),
    "500": ({"error_every_nth": 1, "error_status": 500}, RetryableConnectorError, 500),
    "503": ({"burst_5xx": 50, "retry_after_seconds": RETRY_AFTER}, RetryableConnectorError, 503),
    "timeout": ({"timeout_seconds": SLOW_ANSWER, "timeout_action": "hang_up"}, RetryableConnectorError, None),
}


@pytest.mark.parametrize("harness", UPSERTING, indirect=True)
def test_upsert_is_idempotent(harness):
    # given a key the counterpart has never seen
    connector = harness.connector()
    key = new_key()
    # when the same record is upserted twice with it
    first = connector.upsert(harness.entity, harness.payload(key), key)
    second = connector.upsert(harness.entity, harness.payload(key), key)
    # then the counterpart holds one record, and both answers name it
    assert first.created is True
    assert second.created is False
    assert str(second.external_id) == str(first.external_id)
    assert harness.count(key) == 1
    # and find and get read that record back
    assert str(connector.find(harness.entity, key)["id"]) == str(first.external_id)
    assert str(connector.get(harness.entity, first.external_id)["id"]) == str(first.external_id)
    # and a key never used finds nothing
    assert connector.find(harness.entity, new_key("unused")) is None


@pytest.mark.parametrize("harness", FETCHING, indirect=True)
def test_fetch_changes_pages_without_gap_or_duplicate(harness):
    # given more than three pages of records in the counterpart
    harness.seed(PAGE_SIZE * PAGES + 1)
    expected = harness.all_ids()
    connector = harness.connector()
    # when every page is fetched, each from the cursor of the one before
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        batch = connector.fetch_changes(harness.fetch_entity, cursor)
        pages += 1
        assert len(batch.records) <= PAGE_SIZE
        seen += [harness.record_id(record) for record in batch.records]
        cursor = batch.next_cursor
        if not batch.has_more:
            break
        assert cursor, "a page that says more follow must give a cursor"
        assert pages < 100, "paging does not end"
    # then there were at least three pages, no record twice and none missing
    assert pages >= PAGES
    assert len(seen) == len(set(seen)), "a record came twice"
    assert set(seen) == expected


@pytest.mark.parametrize("case", list(FAULTS))
@pytest.mark.parametrize("harness", [*HTTP_CONNECTORS, TRYTON], indirect=True)
def test_errors_are_classified(harness, case):
    faults, kind, status = FAULTS[case]
    # given the counterpart answering every call with the fault
    # when the connector reads
    with harness.failing(**faults) as connector, pytest.raises(ConnectorError) as caught:
        harness.probe(connector)
    # then the error is of the right kind, carries the status, and a 429 its Retry-After
    error = caught.value
    assert isinstance(error, kind), f"{case}: got {type(error).__name__}: {error}"
    assert error.retryable is (kind is RetryableConnectorError)
    assert error.status_code == status
    if case == "429":
        assert error.retry_after == RETRY_AFTER


@pytest.mark.parametrize("harness", [*HTTP_CONNECTORS, TRYTON], indirect=True)
def test_health_check_fails_cleanly_on_wrong_credentials(harness):
    # given a system whose password (secret, token, key) is wrong
    system = harness.make_system(credentials=harness.wrong_credentials)
    # when its connection is tested
    result = connected_system_test_connection(system=system)
    # then the test fails as terminal, says the credentials were refused, and does not echo them
    assert result.ok is False
    assert result.retryable is False
    assert result.status_code in (400, 401, 403)
    assert "refused" in result.message.lower()
    for secret in harness.wrong_credentials.values():
        assert str(secret) not in result.message


@pytest.mark.parametrize("harness", HTTP_CONNECTORS, indirect=True)
def test_a_retry_after_a_lost_answer_gives_one_record(harness):
    # given a counterpart that stores the next write but loses its answer
    key = new_key()
    with harness.failing(accept_then_fail_every_nth=1) as connector:
        # when the connector upserts
        with pytest.raises(RetryableConnectorError):
            connector.upsert(harness.entity, harness.payload(key), key)
        # then the hub only knows the call may be retried; the record is there
        assert harness.count(key) == 1
    # when the hub retries once the counterpart answers again
    result = connector.upsert(harness.entity, harness.payload(key), key)
    # then the record is found rather than created again
    assert result.created is False
    assert harness.count(key) == 1


@pytest.mark.tryton
@pytest.mark.parametrize("harness", [TRYTON], indirect=True)
def test_a_retry_after_a_lost_answer_gives_one_record_in_tryton(harness):
    # given a proxy in front of Tryton that forwards a create and loses its answer
    key = new_key()
    with harness.accepting_then_failing() as (connector, heal):
        with pytest.raises(RetryableConnectorError):
            connector.upsert(harness.entity, harness.payload(key), key)
        assert harness.count(key) == 1
        heal()
        # when the hub retries
        result = connector.upsert(harness.entity, harness.payload(key), key)
    # then the party is found rather than created again
    assert result.created is False
    assert harness.count(key) == 1


@pytest.mark.parametrize("harness", [*HTTP_CONNECTORS, TRYTON], indirect=True)
def test_a_full_run_logs_no_credential(harness, caplog):
    # given every log line captured, down to DEBUG
    caplog.set_level(logging.DEBUG)
    connector = harness.connector()
    key = new_key()
    # when a full contract run happens: health, upsert twice, find, get, a page of changes, a fault, bad credentials
    assert connector.health_check().ok
    result = connector.upsert(harness.entity, harness.payload(key), key)
    connector.upsert(harness.entity, harness.payload(key), key)
    connector.find(harness.entity, key)
    connector.get(harness.entity, result.external_id)
    if harness.fetch_entity:
        connector.fetch_changes(harness.fetch_entity, None)
    with harness.failing(error_every_nth=1, error_status=401) as failing, pytest.raises(ConnectorError):
        harness.probe(failing)
    assert not connected_system_test_connection(system=harness.make_system(credentials=harness.wrong_credentials)).ok
    # then calls were logged, and no secret, token or password appears in any record
    text = "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)
    assert "connector call" in text or "tryton rpc" in text
    secrets = harness.secrets()
    assert secrets
    for secret in secrets:
        assert secret not in text, f"a credential of {harness.name} was logged"
