"""Input control and error shape: body size and JSON depth limits, problem+json everywhere, no leaked internals."""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings

from governance.models import RateCard
from governance.tests.factories import LegalEntityFactory
from integrationhub.parsers import json_depth

pytestmark = pytest.mark.django_db

PROBE = "integrationhub.tests.sec_urls"
PROBLEM_KEYS = {"type", "title", "status", "detail"}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    assert body["type"].startswith("https://")
    return body


def test_json_depth_counts_brackets_outside_strings_only():
    assert json_depth('{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    assert json_depth(nested(40)) == 40


@override_settings(ROOT_URLCONF=PROBE)
def test_json_at_the_depth_limit_is_accepted_and_one_deeper_is_400_naming_the_limit(settings):
    client = Client()
    ok = client.post("/api/test-api/echo/", nested(32), content_type="application/json")
    too_deep = client.post("/api/test-api/echo/", nested(33), content_type="application/json")
    assert ok.status_code == 200
    body = assert_problem(too_deep, 400)
    assert "33" in body["detail"] and "limit is 32" in body["detail"]


@override_settings(ROOT_URLCONF=PROBE)
def test_very_deep_json_is_refused_before_parsing_not_a_500():
    response = Client().post("/api/test-api/echo/", nested(100_000), content_type="application/json")
    assert_problem(response, 400)


@override_settings(ROOT_URLCONF=PROBE, DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_body_over_the_limit_is_413_naming_the_limit():
    body = json.dumps({"blob": "x" * 2000})
    response = Client().post("/api/test-api/echo/", body, content_type="application/json")
    problem = assert_problem(response, 413)
    assert "limit is 1000 bytes" in problem["detail"]


@override_settings(ROOT_URLCONF=PROBE)
@pytest.mark.parametrize("text", ["{not json", '{"a": NaN}', '{"a": 1} trailing'])
def test_malformed_json_is_400_problem_json(text):
    response = Client().post("/api/test-api/echo/", text, content_type="application/json")
    assert_problem(response, 400)


def test_validation_errors_list_each_field_path(client_as):
    # given an analyst sending a rate card with a bad currency, a bad date and a bad line
    LegalEntityFactory(code="UK01")
    body = {
        "name": "x",
        "legal_entity": "UK01",
        "currency": "pounds",
        "valid_from": "not-a-date",
        "lines": [{"role": "Manager", "bill_rate": "abc", "cost_rate": "1.00"}],
    }

    # when it is posted
    response = client_as("analyst").post("/api/v1/rate-cards/", json.dumps(body), content_type="application/json")

    # then one problem lists every field path with a message, and nothing was created
    problem = assert_problem(response, 400)
    fields = {error["field"] for error in problem["errors"]}
    assert {"currency", "valid_from", "lines.0.bill_rate"} <= fields
    assert all(error["message"] for error in problem["errors"])
    assert RateCard.objects.count() == 0


def test_not_found_and_method_not_allowed_are_problem_json(client_as):
    client = client_as("integration_admin")
    assert_problem(client.get("/api/v1/rate-cards/999999/"), 404)
    assert_problem(client.delete("/api/v1/rate-cards/"), 405)


@override_settings(ROOT_URLCONF=PROBE)
def test_an_unexpected_error_is_a_500_problem_without_trace_or_secret(caplog):
    # when a view raises with secrets in its message
    response = Client(raise_request_exception=False).get("/api/test-api/fail/")

    # then the client gets a plain 500 problem; the details stay in the log
    body = assert_problem(response, 500)
    text = response.content.decode()
    for leak in ("hunter2", "tok_live_42", "Traceback", "RuntimeError", "sec_urls.py"):
        assert leak not in text
    assert body["title"] == "Internal error"
