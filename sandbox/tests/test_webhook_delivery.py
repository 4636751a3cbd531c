"""Closed-won in the sandbox CRM sends a Standard Webhooks-signed POST, after commit, on the delivery queue."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from sandbox import services
from sandbox.choices import EVENT_OPPORTUNITY_CLOSED_WON, SandboxSystem
from sandbox.models import SandboxWebhookDelivery
from sandbox.tasks import MAX_RETRIES, sandbox_webhook_deliver_task
from sandbox.tests.conftest import CRM_DATA, WEBHOOK_SECRET
from sandbox.webhooks import verify_standard_webhook_headers

pytestmark = pytest.mark.django_db


class Receiver:
    """A tiny HTTP server on a free port that records each POST and answers `status`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(sandbox_credentials) -> Iterator[Receiver]:
    """A running receiver, configured as the sandbox CRM's webhook URL."""
    with Receiver() as running:
        setting = services.sandbox_setting_ensure(system=SandboxSystem.CRM)
        setting.webhook_url = running.url
        services.sandbox_setting_save(setting=setting, reason="test receiver")
        yield running


@pytest.fixture
def published(monkeypatch) -> list[dict]:
    """Tasks run in-process (eagerly) instead of going to the broker; records each publish and its queue."""
    calls: list[dict] = []

    def apply_async(args=(), kwargs=None, **options):
        calls.append({"args": args, "options": options})
        return sandbox_webhook_deliver_task.apply(args=args, kwargs=kwargs or {})

    monkeypatch.setattr(sandbox_webhook_deliver_task, "apply_async", apply_async)
    return calls


def opportunity(crm_client: Client, stage: str = "Negotiation/Review") -> str:
    account = crm_client.post(f"{CRM_DATA}/sobjects/Account/", {"Name": "Northwind"}, content_type="application/json")
    response = crm_client.post(
        f"{CRM_DATA}/sobjects/Opportunity/",
        {"Name": "Data platform", "StageName": stage, "CloseDate": "2025-06-30", "AccountId": account.json()["id"]},
        content_type="application/json",
    )
    return response.json()["id"]


def close_won(crm_client: Client, opportunity_id: str):
    return crm_client.patch(
        f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}",
        {"StageName": "Closed Won"},
        content_type="application/json",
    )


def test_closed_won_is_sent_only_after_commit_on_the_delivery_queue(
    crm_client, receiver, published, django_capture_on_commit_callbacks
):
    opportunity_id = opportunity(crm_client)
    # when the opportunity is marked closed-won through the API
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert close_won(crm_client, opportunity_id).status_code == 204
        # then nothing is sent before the commit
        assert receiver.requests == [] and published == []
    # when the transaction commits
    for callback in callbacks:
        callback()
    # then one task went to the delivery queue and the receiver got one POST
    assert [call["options"] for call in published] == [{"queue": "delivery"}]
    assert len(receiver.requests) == 1
    delivery = SandboxWebhookDelivery.objects.get()
    assert delivery.status == "delivered" and delivery.status_code == 204 and delivery.attempts == 1
    assert delivery.record_external_id == opportunity_id


def test_the_webhook_is_signed_and_a_tampered_body_fails_verification(
    crm_client, receiver, published, django_capture_on_commit_callbacks
):
    opportunity_id = opportunity(crm_client)
    with django_capture_on_commit_callbacks(execute=True):
        close_won(crm_client, opportunity_id)
    request = receiver.requests[0]
    headers, body = request["headers"], request["body"]
    # the three Standard Webhooks headers are there and verify with the shared secret
    assert headers["webhook-id"].startswith("msg_") and headers["webhook-timestamp"].isdigit()
    assert headers["webhook-signature"].startswith("v1,")
    assert verify_standard_webhook_headers(WEBHOOK_SECRET, headers, body)
    # the payload is the event and the opportunity as the CRM API shows it
    payload = json.loads(body)
    assert payload["type"] == EVENT_OPPORTUNITY_CLOSED_WON
    assert payload["data"]["Id"] == opportunity_id and payload["data"]["StageName"] == "Closed Won"
    assert payload["data"]["IsWon"] is True
    # a changed body, or another secret, does not verify
    tampered = body.replace(b"Closed Won", b"Closed Lost")
    assert not verify_standard_webhook_headers(WEBHOOK_SECRET, headers, tampered)
    assert not verify_standard_webhook_headers("whsec_" + "A" * 44, headers, body)


def test_only_the_transition_to_closed_won_sends(crm_client, receiver, published, django_capture_on_commit_callbacks):
    opportunity_id = opportunity(crm_client)
    with django_capture_on_commit_callbacks(execute=True):
        close_won(crm_client, opportunity_id)
        close_won(crm_client, opportunity_id)  # already won: no second event
        crm_client.patch(
            f"{CRM_DATA}/sobjects/Opportunity/{opportunity_id}", {"Amount": 5}, content_type="application/json"
        )
    assert len(receiver.requests) == 1
    assert SandboxWebhookDelivery.objects.count() == 1


def test_creating_an_opportunity_already_closed_won_sends(
    crm_client, receiver, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        opportunity(crm_client, stage="Closed Won")
    assert len(receiver.requests) == 1


def test_no_webhook_url_means_no_delivery(crm_client, published, django_capture_on_commit_callbacks):
    opportunity_id = opportunity(crm_client)
    with django_capture_on_commit_callbacks(execute=True):
        close_won(crm_client, opportunity_id)
    assert not SandboxWebhookDelivery.objects.exists() and published == []


def test_a_5xx_is_retried_then_recorded_failed(crm_client, receiver, published, django_capture_on_commit_callbacks):
    receiver.status = 503
    opportunity_id = opportunity(crm_client)
    with django_capture_on_commit_callbacks(execute=True):
        close_won(crm_client, opportunity_id)
    delivery = SandboxWebhookDelivery.objects.get()
    assert delivery.attempts == MAX_RETRIES + 1 == len(receiver.requests)
    assert delivery.status == "failed" and delivery.status_code == 503 and "HTTP 503" in delivery.error
    assert len(delivery.attempt_log) == MAX_RETRIES + 1
    # every attempt carries the same message id (receivers deduplicate on it)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1


def test_a_4xx_is_not_retried(crm_client, receiver, published, django_capture_on_commit_callbacks):
    receiver.status = 400
    with django_capture_on_commit_callbacks(execute=True):
        opportunity(crm_client, stage="Closed Won")
    delivery = SandboxWebhookDelivery.objects.get()
    assert delivery.attempts == 1 and delivery.status == "failed" and delivery.status_code == 400


def test_an_unreachable_receiver_is_recorded_with_the_error(crm_client, published, django_capture_on_commit_callbacks):
    setting = services.sandbox_setting_ensure(system=SandboxSystem.CRM)
    setting.webhook_url = "http://127.0.0.1:9/hooks"  # discard port: nothing listens
    services.sandbox_setting_save(setting=setting)
    delivery_id = None
    with django_capture_on_commit_callbacks(execute=False):
        opportunity(crm_client, stage="Closed Won")
        delivery_id = SandboxWebhookDelivery.objects.get().pk
    outcome = services.webhook_delivery_attempt(delivery_id=delivery_id)
    delivery = SandboxWebhookDelivery.objects.get()
    assert outcome.retryable and not outcome.delivered
    assert delivery.status == "pending" and delivery.status_code is None and "ConnectError" in delivery.error


def test_a_delivered_webhook_is_not_sent_twice(crm_client, receiver, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        opportunity(crm_client, stage="Closed Won")
    delivery = SandboxWebhookDelivery.objects.get()
    sandbox_webhook_deliver_task.apply(args=[delivery.pk])  # a redelivered task message
    assert len(receiver.requests) == 1


def test_the_ui_button_marks_closed_won_and_sends(
    crm_client, receiver, published, client_as, settings, django_capture_on_commit_callbacks
):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    opportunity_id = opportunity(crm_client)
    staff = client_as("integration_admin")
    page = staff.get("/sandbox/crm/ui/opportunities/")
    assert page.status_code == 200 and opportunity_id in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/sandbox/crm/ui/opportunities/{opportunity_id}/close-won")
    assert response.status_code == 302
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0]["body"])["data"]["Id"] == opportunity_id


def test_the_ui_needs_a_staff_login(db):
    response = Client().get("/sandbox/crm/ui/opportunities/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
