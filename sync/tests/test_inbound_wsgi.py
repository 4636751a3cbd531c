"""The hub's WSGI application answers webhooks before Django, with the same answers as the Django view."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from django.core import signals

from integrationhub.wsgi import application
from sandbox.webhooks import standard_webhook_headers
from sync.models import Message
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db(transaction=True)


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = int(status.split(" ", 1)[0])
        self.status_line = status
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def wsgi_call(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None, host: str = "127.0.0.1"
) -> Answer:
    """One request through integrationhub.wsgi.application, as gunicorn would make it."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        captured["status"], captured["headers"] = status, response_headers

    chunks = application(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return Answer(captured["status"], captured["headers"], data)


def signed_wsgi_post(flow: Any, payload: Any, *, msg_id: str | None = None, secret: str | None = None, **kw: Any):
    text = json.dumps(payload)
    headers = standard_webhook_headers(
        secret or flow.secret, msg_id or f"msg_{uuid.uuid4().hex}", int(time.time()), text
    )
    return wsgi_call(
        "POST",
        f"/api/v1/inbound/{flow.source.slug}/client.updated/",
        body=text.encode(),
        headers={**headers, **kw.pop("headers", {})},
        **kw,
    )


def test_a_signed_event_is_stored_once_with_the_django_views_answer_and_headers(client, make_flow):
    # given a source system with a webhook secret
    flow = make_flow()
    # when it posts a signed event to the hub's WSGI application, and another one through Django's view
    answer = signed_wsgi_post(flow, client_record(), msg_id="msg_w1", headers={"X-Correlation-ID": "corr-w1"})
    through_django = signed_post(client, flow, client_record("C-2"), msg_id="msg_w2")
    # then both are stored once and answered alike: 202, the message id and the correlation id
    assert answer.status_code == 202, answer.body
    assert answer.status_line == "202 Accepted"
    message = Message.objects.get(idempotency_key="msg_w1")
    assert answer.json() == {"message_id": message.pk, "correlation_id": "corr-w1"}
    assert message.correlation_id == "corr-w1" and message.raw_payload == client_record()
    assert through_django.status_code == 202 and set(through_django.json()) == set(answer.json())
    # and the answer carries the correlation id and the security headers Django's middleware would add
    assert answer.headers["x-correlation-id"] == "corr-w1"
    for name in ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"):
        assert answer.headers[name] == through_django[name], name
    assert answer.headers["content-type"] == "application/json"


def test_a_repeated_event_answers_200_duplicate_and_stores_nothing_more(make_flow):
    # given an accepted event
    flow = make_flow()
    first = signed_wsgi_post(flow, client_record(), msg_id="msg_again")
    # when the sender retries it
    second = signed_wsgi_post(flow, client_record(), msg_id="msg_again")
    # then 200 with the original id, and one message
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["message_id"] == first.json()["message_id"] and second.json()["duplicate"] is True
    assert Message.objects.count() == 1


def test_a_bad_signature_is_401_problem_json_stores_nothing_and_is_counted(make_flow):
    from insights.metrics import REQUESTS

    # given a sender with the wrong secret
    flow = make_flow()
    counter = REQUESTS.labels(view="sync-inbound-webhook", method="POST", status="401")
    before = counter._value.get()
    # when it posts through the WSGI application
    answer = signed_wsgi_post(flow, client_record(), secret="whsec_" + "QUJD" * 8)
    # then 401 problem+json naming the signature, nothing stored, and the request metric counts it
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert "signature" in answer.json()["detail"] and answer.json()["hint"]
    assert Message.objects.count() == 0
    assert counter._value.get() == before + 1


def test_a_body_over_the_limit_is_413_before_it_is_read(make_flow, settings):
    # given a 1 KB limit on webhook bodies
    settings.HUB_INBOUND_MAX_BODY_BYTES = 1024
    flow = make_flow()
    # when a sender declares a bigger body
    answer = signed_wsgi_post(flow, {"Id": "C-1", "Name": "x" * 5000})
    # then 413 problem+json that gives the limit, and nothing is stored
    assert answer.status_code == 413
    assert "1024" in answer.json()["detail"]
    assert Message.objects.count() == 0


def test_other_requests_go_to_django(make_flow):
    # given the hub's WSGI application
    flow = make_flow()
    # when a GET reaches the webhook URL, a POST comes from a host that is not allowed, or another URL is asked
    get = wsgi_call("GET", f"/api/v1/inbound/{flow.source.slug}/client.updated/")
    bad_host = signed_wsgi_post(flow, client_record(), host="evil.example")
    health = wsgi_call("GET", "/healthz")
    # then Django answers them: 405 for the method, 400 for the host, the health page
    assert get.status_code == 405
    assert bad_host.status_code == 400
    assert health.status_code == 200
    assert Message.objects.count() == 0


def test_an_unexpected_error_is_500_problem_json_with_the_correlation_id(make_flow, monkeypatch):
    import sync.api.inbound as inbound

    # given a failure nobody expected in the service
    flow = make_flow()

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(inbound, "message_ingest", broken)
    finished: list[bool] = []

    def on_finished(**kwargs: Any) -> None:
        finished.append(True)

    signals.request_finished.connect(on_finished)
    try:
        # when an event arrives
        answer = signed_wsgi_post(flow, client_record(), headers={"X-Correlation-ID": "corr-500"})
    finally:
        signals.request_finished.disconnect(on_finished)
    # then 500 problem+json that says nothing was stored and gives the correlation id; the request still ends
    # as Django's would (its connections are handled by request_finished)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "nothing was stored" in answer.json()["detail"] and "corr-500" in answer.json()["hint"]
    assert "boom" not in answer.body.decode()
    assert finished == [True]
    assert Message.objects.count() == 0


def test_a_conflict_whose_original_is_gone_is_409_and_asks_to_resend(make_flow, monkeypatch):
    import sync.ingest as ingest

    # given a store that reports a conflicting key whose message was removed before it could be read
    flow = make_flow()
    monkeypatch.setattr(ingest, "insert_unless_conflict", lambda *args, **kwargs: None)
    # when an event arrives
    answer = signed_wsgi_post(flow, client_record())
    # then 409 problem+json that asks the sender to send it again, and nothing is stored
    assert answer.status_code == 409
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Send the event again" in answer.json()["hint"]
    assert Message.objects.count() == 0


def test_a_webhook_runs_no_health_check_and_survives_a_connection_the_server_dropped(make_flow, monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("a connection dropped by the server needs PostgreSQL")
    import psycopg

    checks: list[bool] = []
    is_usable = connection.is_usable

    def counted_is_usable() -> bool:
        checks.append(is_usable())
        return checks[-1]

    monkeypatch.setattr(connection, "is_usable", counted_is_usable)
    # given an accepted webhook, so the web process keeps its database connection
    flow = make_flow()
    assert signed_wsgi_post(flow, client_record("C-1"), msg_id="msg_keep").status_code == 202
    # when the next webhook comes on that kept, healthy connection
    checks.clear()
    assert signed_wsgi_post(flow, client_record("C-2"), msg_id="msg_healthy").status_code == 202
    # then no health check (a `SELECT 1` round trip) ran before its INSERT
    assert checks == []
    # when the server has dropped the connection (a restart, an idle timeout) before the next webhook
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "host", "port", "user")}) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    answer = signed_wsgi_post(flow, client_record("C-3"), msg_id="msg_after_drop")
    # then the failed INSERT finds the connection broken, and the event is accepted on a new one, once
    assert checks == [False]
    assert answer.status_code == 202, answer.body
    assert Message.objects.filter(idempotency_key="msg_after_drop").count() == 1
    assert Message.objects.count() == 3
