"""The Tryton connector's wire format, error mapping and idempotency tags: no server needed."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from decimal import Decimal

import pytest

from connectors.choices import SystemRole
from connectors.http import RetryableConnectorError, TerminalConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import ConnectorRegistry
from connectors.tryton import (
    TrytonAuthError,
    TrytonConnector,
    TrytonRpcError,
    _like_escape,
    _rpc_error,
    _Session,
    _tag_of,
    _tagged_text,
    from_wire,
    jsonable,
    sessions_clear,
    tag_for,
    to_wire,
)


def test_typed_values_round_trip_through_the_tagged_json():
    # given every type Tryton tags
    values = {
        "date": dt.date(2026, 11, 26),
        "datetime": dt.datetime(2026, 11, 26, 10, 30, 5, 123456),
        "timedelta": dt.timedelta(hours=3),
        "decimal": Decimal("100.00"),
        "bytes": b"\x00hub",
        "nested": [{"d": Decimal("1.5")}],
    }
    # when they are encoded and decoded
    wire = to_wire(values)
    # then the wire form uses Tryton's tags and decodes back to the same values
    assert wire["timedelta"] == {"__class__": "timedelta", "seconds": 10800.0}
    assert wire["decimal"] == {"__class__": "Decimal", "decimal": "100.00"}
    assert wire["date"] == {"__class__": "date", "year": 2026, "month": 11, "day": 26}
    assert from_wire(json.dumps(wire)) == values


def test_an_aware_datetime_is_sent_as_naive_utc():
    # given a datetime two hours east of UTC
    aware = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    # when / then Tryton receives 10:00 without a zone
    assert to_wire(aware)["hour"] == 10


def test_jsonable_turns_tryton_values_into_plain_json():
    assert jsonable({"a": Decimal("2.50"), "d": dt.date(2026, 1, 2), "t": dt.timedelta(minutes=90)}) == {
        "a": "2.50",
        "d": "2026-01-02",
        "t": 5400.0,
    }


def test_a_user_error_array_becomes_a_terminal_error_with_its_message():
    # given Tryton's error array for a UserError
    error = ["UserError", ["The project has no list price.", "Set one.", None]]
    # when it is mapped
    mapped = _rpc_error(error, rpc_method="model.project.work.invoice", system_slug="erp")
    # then it is terminal and says what Tryton said
    assert isinstance(mapped, TrytonRpcError) and isinstance(mapped, TerminalConnectorError)
    assert not mapped.retryable
    assert mapped.fault == "UserError"
    assert "no list price" in mapped.detail and "model.project.work.invoice" in mapped.detail


def test_a_server_traceback_stays_out_of_the_error_message():
    # given an unexpected server exception: [str(exception), traceback]
    mapped = _rpc_error(["'no.such.model'", "Traceback (most recent call last): ..."], rpc_method="m", system_slug="")
    # then the message names the fault but not the traceback
    assert "Traceback" not in mapped.detail


def test_tags_are_exact_and_like_wildcards_are_escaped():
    assert tag_for("abc-1") == "hub:abc-1"
    assert _tagged_text("hub:k", "  note ", " ") == "hub:k note"
    assert _tagged_text("hub:k", None, " ") == "hub:k"
    assert _tag_of("hub:k note", " ") == "hub:k"
    assert _tag_of("someone else's text", " ") is None
    assert _like_escape("a_b%c\\") == "a\\_b\\%c\\\\"
    with pytest.raises(TerminalConnectorError):
        tag_for("has a space")


def test_the_session_repr_hides_the_key():
    session = _Session(login="hub", user_id=2, key="secret-session-key")
    assert "secret-session-key" not in repr(session)
    assert session.authorization().startswith("Session ")


def test_the_connector_declaration_is_accepted_by_a_registry():
    # given a fresh registry (the hub's own is frozen at start-up)
    registry = ConnectorRegistry()
    # when the connector registers / then its capabilities match its methods and secrets are not settings
    registry.register(TrytonConnector)
    assert registry.get("tryton_erp") is TrytonConnector
    assert TrytonConnector.capabilities == {
        "health_check",
        "fetch_changes",
        "get",
        "find",
        "upsert",
        "update",
        "upsert_batch",
        "void",
    }


# --- status classification against a local stand-in server (the real Tryton cannot be told to fail) ---


def _fake_tryton(local_server, call_answers):
    """Answer login with a session, and every other method from `call_answers` (a list, popped in order)."""
    logins = []

    def respond(request):
        envelope = json.loads(request.body)
        if envelope["method"] == "common.db.login":
            logins.append(request)
            return 200, {"id": envelope["id"], "result": [2, f"key-{len(logins)}", None]}, {}
        status, body = call_answers.pop(0)
        if envelope["method"] == "model.res.user.get_preferences" and status == 200 and body is None:
            return 200, {"id": envelope["id"], "result": {"company": 1}}, {}
        return status, ({"id": envelope["id"], **body} if isinstance(body, dict) else body), {}

    local_server.route_fn("POST", "/db/rpc/", respond)
    return logins


def _connector(local_server):
    system = ConnectedSystem(
        name="Fake Tryton",
        slug="fake-tryton",
        role=SystemRole.ERP,
        connector_type="tryton_erp",
        base_url=local_server.url,
        settings={"database": "db", "company_id": 1, "timeout_seconds": 5},
        max_concurrency=1,
    )
    return TrytonConnector(system=system, credentials={"user": "hub", "password": "pw-123456"})


@pytest.fixture(autouse=True)
def _no_cached_sessions():
    sessions_clear()
    yield
    sessions_clear()


def test_a_401_on_a_call_logs_in_again_and_retries_once(local_server):
    # given a server that answers the first call with 401 (session expired), then the result
    logins = _fake_tryton(local_server, [(200, None), (401, None), (200, {"result": 7})])
    connector = _connector(local_server)
    # when a call is made
    result = connector.client.execute("party.party", "search_count", [])
    # then the client logged in twice and the second session's header was sent
    assert result == 7
    assert len(logins) == 2
    sent = local_server.requests[-1].headers["Authorization"]
    assert base64.b64decode(sent.split(" ", 1)[1]).decode() == "hub:2:key-2"


def test_a_second_401_is_a_terminal_auth_error(local_server):
    _fake_tryton(local_server, [(200, None), (401, None), (401, None)])
    with pytest.raises(TrytonAuthError):
        _connector(local_server).client.execute("party.party", "search_count", [])


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retryable(local_server, status):
    _fake_tryton(local_server, [(200, None), (status, None)])
    with pytest.raises(RetryableConnectorError) as caught:
        _connector(local_server).client.execute("party.party", "search_count", [])
    assert caught.value.status_code == status


@pytest.mark.parametrize("status", [403, 422])
def test_other_4xx_are_terminal(local_server, status):
    _fake_tryton(local_server, [(200, None), (status, None)])
    with pytest.raises(TerminalConnectorError) as caught:
        _connector(local_server).client.execute("party.party", "search_count", [])
    assert not caught.value.retryable


def test_an_error_array_with_http_200_is_terminal(local_server):
    _fake_tryton(local_server, [(200, None), (200, {"error": ["UserError", ["Bad value.", "", None]]})])
    with pytest.raises(TrytonRpcError) as caught:
        _connector(local_server).client.execute("party.party", "create", [{}])
    assert caught.value.fault == "UserError" and "Bad value." in caught.value.detail


def test_a_rate_limited_login_is_retryable(local_server):
    # given a server that refuses logins with 429 (too many failed attempts)
    local_server.route("POST", "/db/rpc/", status=429, body=None)
    # when / then the health check fails as retryable, not as bad credentials
    with pytest.raises(RetryableConnectorError) as caught:
        _connector(local_server).client.login()
    assert caught.value.status_code == 429


def test_a_timeout_is_retryable(local_server):
    # given a server slower than the system's timeout
    def slow(_request):
        time.sleep(1.5)
        return 200, {"id": 1, "result": "8.2"}, {}

    local_server.route_fn("POST", "/rpc/", slow)
    connector = _connector(local_server)
    connector.system.settings["timeout_seconds"] = 0.5
    connector.settings["timeout_seconds"] = 0.5
    # when / then
    with pytest.raises(RetryableConnectorError):
        connector.client.server_version()
