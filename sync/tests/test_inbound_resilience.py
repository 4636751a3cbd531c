"""Ingest keeps its promise when parts of the hub are unwell: without the cache a signed event is still stored
(the inbound budget fails open and says so on /metrics); without the database it is 503 with Retry-After, never
a 500; and an authentic event that the database could not hold is a 400 naming the field, with nothing stored."""

from __future__ import annotations

import json
import math
import socket

import pytest
from django.db import OperationalError
from django.test import Client
from prometheus_client import REGISTRY

from sync import ingest
from sync.models import Message
from sync.tests.conftest import client_record, signed_post
from sync.tests.test_inbound_wsgi import signed_wsgi_post

FAIL_OPEN_METRIC = "hub_inbound_budget_fail_open_total"


def closed_port() -> int:
    """A local port nothing listens on: bound by the system for a moment, then let go."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fail_open_count() -> float:
    return REGISTRY.get_sample_value(FAIL_OPEN_METRIC) or 0.0


def point_the_cache_at_nothing(settings) -> None:
    """Django's cache pointed at a Redis that is not there (the settings change gives every thread a new backend)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
        }
    }


def refused_fields(response) -> list[str]:
    return [error["field"] for error in response.json().get("errors", [])]


# --- without the cache ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_with_the_cache_unreachable_signed_events_are_all_stored_and_counted(make_flow, settings, monkeypatch, caplog):
    # given a system with a small budget, and a cache nobody can reach
    flow = make_flow()
    flow.source.inbound_rate = "5/hour"
    flow.source.save()
    point_the_cache_at_nothing(settings)
    monkeypatch.setattr(ingest, "_fail_open_log", {"at": -math.inf, "unlogged": 0})
    before = fail_open_count()

    # when the system sends 20 signed events
    client = Client(raise_request_exception=False)
    statuses = [signed_post(client, flow, client_record(f"C-{n}")).status_code for n in range(20)]

    # then every one is accepted and stored, each is counted on /metrics, and the warning is logged once
    assert statuses == [202] * 20
    assert Message.objects.filter(system=flow.source).count() == 20
    assert fail_open_count() == before + 20
    warnings = [record for record in caplog.records if "inbound budget unavailable" in record.getMessage()]
    assert len(warnings) == 1


@pytest.mark.django_db
def test_the_fail_open_counter_is_on_the_metrics_page(client):
    # when Prometheus scrapes the hub (from the local address the default allow-list lets in)
    text = client.get("/metrics").content.decode()

    # then the counter is exposed
    assert f"# TYPE {FAIL_OPEN_METRIC} counter" in text
    assert f"\n{FAIL_OPEN_METRIC} " in text


# --- without the database -----------------------------------------------------------------------------------


def database_gone(*args, **kwargs):
    raise OperationalError("server closed the connection unexpectedly")


@pytest.mark.django_db
def test_when_the_database_does_not_answer_the_sender_gets_503_with_retry_after(make_flow, monkeypatch):
    # given a database whose INSERT fails as when the server is down
    flow = make_flow()
    monkeypatch.setattr(ingest, "insert_unless_conflict", database_gone)

    # when a signed event arrives
    response = signed_post(Client(raise_request_exception=False), flow, client_record())

    # then 503 problem+json says to resend after Retry-After, and nothing is stored
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert int(response["Retry-After"]) > 0
    body = response.json()
    assert body["status"] == 503 and body["type"].endswith("/storage_unavailable") and "Retry-After" in body["hint"]
    monkeypatch.undo()
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_wsgi_fast_path_answers_503_too_when_the_database_does_not_answer(make_flow, monkeypatch):
    # given a database whose INSERT fails
    flow = make_flow()
    monkeypatch.setattr(ingest, "insert_unless_conflict", database_gone)

    # when a signed event arrives through the hub's WSGI application
    answer = signed_wsgi_post(flow, client_record())

    # then 503 with Retry-After, not the generic 500, and nothing is stored
    assert answer.status_code == 503, answer.body
    assert answer.headers["content-type"] == "application/problem+json"
    assert int(answer.headers["retry-after"]) > 0
    monkeypatch.undo()
    assert not Message.objects.exists()


# --- authentic but unstorable -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"Id": "C-1", "amount": NaN}', "body.amount"),
        ('{"Id": "C-1", "amount": Infinity}', "body.amount"),
        ('{"Id": "C-1", "amount": -Infinity}', "body.amount"),
        ('{"Id": "C-1", "amount": 1e999}', "body.amount"),
        ('{"Id": "C-1", "lines": [{"rate": 1.5}, {"rate": -1e999}]}', "body.lines[1].rate"),
        ('{"Id": "C-1", "Name": "Ac\\ud800me"}', "body.Name"),
        ('{"Id": "C-1", "Ac\\udfffme": 1}', "body.Ac\\udfffme"),
    ],
)
def test_an_authentic_event_the_database_cannot_hold_is_400_naming_the_field(client, make_flow, body, field):
    # given a correctly signed body that JSON allows but PostgreSQL refuses
    flow = make_flow()

    # when it is posted
    response = signed_post(client, flow, None, body=body)

    # then 400 problem+json names the field and says what to send instead, and nothing is stored
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert refused_fields(response) == [field]
    assert response.json()["hint"]
    assert not Message.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("sequence", ["1" * 30, "9223372036854775808", "-9223372036854775809", "abc", "1.5", "²"])
def test_a_source_sequence_that_is_no_bigint_is_400_naming_the_header(client, make_flow, sequence):
    # given a signed event whose X-Source-Sequence is not a 64-bit integer
    flow = make_flow()

    # when it is posted
    response = signed_post(client, flow, client_record(), headers={"X-Source-Sequence": sequence})

    # then 400 names the header, and nothing is stored
    assert response.status_code == 400, response.content
    assert refused_fields(response) == ["X-Source-Sequence"]
    assert not Message.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("sequence", "stored"), [("42", 42), (" 7 ", 7), ("9223372036854775807", 2**63 - 1)])
def test_a_source_sequence_within_bigint_is_stored(client, make_flow, sequence, stored):
    flow = make_flow()
    response = signed_post(client, flow, client_record(), headers={"X-Source-Sequence": sequence})
    assert response.status_code == 202, response.content
    assert Message.objects.get().source_sequence == stored


@pytest.mark.django_db(transaction=True)
def test_the_wsgi_fast_path_refuses_unstorable_events_with_the_same_400(make_flow):
    # given a system
    flow = make_flow()

    # when a NaN and an oversized sequence arrive through the hub's WSGI application
    nan = signed_wsgi_post(flow, {"Id": "C-1", "amount": math.nan})
    sequence = signed_wsgi_post(flow, client_record(), headers={"X-Source-Sequence": "9" * 30})

    # then both are 400 naming the field, and nothing is stored
    assert (nan.status_code, sequence.status_code) == (400, 400), (nan.body, sequence.body)
    assert [error["field"] for error in nan.json()["errors"]] == ["body.amount"]
    assert [error["field"] for error in sequence.json()["errors"]] == ["X-Source-Sequence"]
    assert json.loads(nan.body)["status"] == 400
    assert not Message.objects.exists()
