"""A refused call's error carries what the counterpart answered, as a short excerpt without secrets."""

from __future__ import annotations

import json

import httpx

from connectors.http import ANSWER_EXCERPT_CHARS, REMOVED, answer_excerpt, classify_error


def _refusal(status: int, body: bytes, content_type: str = "application/json") -> httpx.Response:
    request = httpx.Request("POST", "https://collab.example/v1.0/groups")
    return httpx.Response(status, content=body, headers={"Content-Type": content_type}, request=request)


def test_a_json_refusal_keeps_the_message_and_drops_secret_values():
    body = {
        "error": {"code": "Request_BadRequest", "message": "The display name contains 'confidential'."},
        "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVlLWhlcmU",
        "client": {"Client-Secret": "s3cr3t", "id": "hub"},
    }
    excerpt = answer_excerpt(_refusal(400, json.dumps(body).encode()))
    assert "The display name contains 'confidential'." in excerpt
    assert "eyJhbGci" not in excerpt and "s3cr3t" not in excerpt
    assert excerpt.count(REMOVED) == 2 and '"id": "hub"' in excerpt


def test_a_text_refusal_loses_markup_passwords_bearer_tokens_and_long_opaque_strings():
    body = (
        b"<html><body><h1>Forbidden</h1><p>password=hunter2 &amp; Authorization: Bearer abc.def.ghi "
        b"key 0123456789abcdef0123456789abcdef0123</p></body></html>"
    )
    excerpt = answer_excerpt(_refusal(403, body, "text/html"))
    assert excerpt.startswith("Forbidden")
    assert "hunter2" not in excerpt and "abc.def.ghi" not in excerpt and "0123456789abcdef0123" not in excerpt
    assert "<" not in excerpt


def test_a_long_answer_is_cut_and_an_empty_or_binary_one_adds_nothing():
    long = answer_excerpt(_refusal(422, json.dumps({"message": "x " * 1000}).encode()))
    assert len(long) == ANSWER_EXCERPT_CHARS and long.endswith("…")
    assert answer_excerpt(_refusal(400, b"")) == ""
    assert answer_excerpt(_refusal(400, b"\x00\x01\x02", "application/octet-stream")) == ""


def test_the_classified_error_says_what_the_counterpart_answered():
    refusal = _refusal(400, json.dumps({"error": {"message": "blocked word of the naming policy"}}).encode())
    error = classify_error(refusal, system_slug="collab")
    assert error.detail.startswith("HTTP 400 Bad Request from collab on /v1.0/groups; it answered: ")
    assert "blocked word of the naming policy" in error.detail
    assert not error.retryable
    # a 5xx answer is retryable and still says what it was
    outage = classify_error(_refusal(503, b"upstream maintenance until 10:00", "text/plain"), system_slug="collab")
    assert outage.retryable and outage.detail.endswith("it answered: upstream maintenance until 10:00")
