"""Exception alerts: an item past its SLA alerts a group by email and a chat webhook once, through the transport,
with retries; digests and escalations; the item shows who it alerted."""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone

from alerts.choices import AlertCadence, AlertChannel, AlertKind, AlertStatus, AlertTrigger, ChatFlavour
from alerts.models import Alert, AlertRule
from alerts.services import MAX_ATTEMPTS, alert_rules_evaluate, alerts_run
from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory
from exception_queue.models import ExceptionItem
from governance.models import LegalEntity
from integrationhub.models import AuditEvent
from sync.models import DeliveryAttempt

pytestmark = pytest.mark.django_db


@dataclass
class ChatReceiver:
    """A local incoming-webhook endpoint: records every post; can be told to answer 503 for the next posts."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    fail_next: int = 0


@pytest.fixture
def chat_receiver() -> Iterator[ChatReceiver]:
    receiver = ChatReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if receiver.fail_next > 0:
                receiver.fail_next -= 1
                self.send_response(503)
                self.end_headers()
                return
            receiver.posts.append(json.loads(body))
            receiver.headers.append(dict(self.headers))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")  # Slack answers "ok", not JSON

        def do_HEAD(self) -> None:
            self.send_response(405)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet: the test reads the recorded posts, not the server log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


def _chat_system(receiver: ChatReceiver, *, flavour: str = ChatFlavour.SLACK) -> ConnectedSystem:
    # A slug of its own: the circuit and rate budget live in the cache under it, across tests
    suffix = uuid.uuid4().hex[:8]
    return ConnectedSystem.objects.create(
        name=f"Finance chat {suffix}",
        slug=f"finance-chat-{suffix}",
        role="collaboration",
        connector_type="chat_webhook",
        base_url=receiver.url,
        settings={"flavour": flavour},
        credentials={"webhook_path": "/services/T000/B000/secret-token"},
        rate_limit_per_second=Decimal("1000"),
    )


def _finance_group(name: str = "finance-uk") -> Group:
    group = Group.objects.create(name=name)
    users = get_user_model().objects
    for username in ("fiona", "frank"):
        user = users.create_user(username=f"{username}-{name}", email=f"{username}@{name}.example", password="x")
        user.groups.add(group)
    users.create_user(username=f"nomail-{name}", email="", password="x").groups.add(group)
    return group


def _item(*, hours_old: float, amount: str | None = "60000.00", entity: LegalEntity | None = None) -> ExceptionItem:
    return ExceptionItem.objects.create(
        category=ExceptionCategory.APPROVAL_REQUIRED,
        reason="Milestone M-7 of contract C-19 needs a finance approval",
        amount=Decimal(amount) if amount is not None else None,
        currency="GBP",
        legal_entity=entity,
        flow="milestone_billing",
        created_at=timezone.now() - datetime.timedelta(hours=hours_old),
    )


def test_an_item_past_its_sla_alerts_once_by_chat_and_once_by_email(chat_receiver, settings):
    # given a rule: approval items past a 4 h SLA alert finance-uk by email and on its chat channel
    settings.HUB_PUBLIC_URL = "https://hub.example.com"
    group = _finance_group()
    rule = AlertRule.objects.create(
        name="Approvals past SLA",
        category=ExceptionCategory.APPROVAL_REQUIRED,
        trigger=AlertTrigger.PAST_SLA,
        sla_hours=4,
        notify_group=group,
        chat_system=_chat_system(chat_receiver),
    )
    late, fresh = _item(hours_old=5), _item(hours_old=1)
    # when the alert run runs twice
    first, second = alerts_run(), alerts_run()
    # then the late item alerted once on each channel, the fresh one not at all, and the second run sent nothing
    assert (first.created, first.sent, second.created, second.sent) == (2, 2, 0, 0)
    assert len(chat_receiver.posts) == 1
    post = chat_receiver.posts[0]
    assert f"#{late.pk}" in post["text"] and "past its SLA" in post["text"]
    assert f"https://hub.example.com/admin/exception_queue/exceptionitem/{late.pk}/" in post["text"]
    assert "60,000.00 GBP" in post["text"]
    assert chat_receiver.headers[0]["X-Hub-Alert-Key"] == f"rule-{rule.pk}:item-{late.pk}:chat"
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["fiona@finance-uk.example", "frank@finance-uk.example"]
    assert f"#{late.pk}" in mail.outbox[0].subject
    assert not Alert.objects.filter(item=fresh).exists()
    # and the chat post went through the transport: an attempt row with the chat system, and an audit event each
    attempt = DeliveryAttempt.objects.get(system=rule.chat_system)
    assert attempt.outcome == "delivered" and attempt.request_summary["operation"] == "upsert"
    assert AuditEvent.objects.filter(action="alert.sent").count() == 2
    # and once the fresh item passes the SLA too, it alerts once
    fresh.created_at -= datetime.timedelta(hours=4)
    fresh.save(update_fields=["created_at"])
    assert alerts_run().sent == 2
    assert len(chat_receiver.posts) == 2 and len(mail.outbox) == 2


def test_the_item_page_shows_who_it_alerted(chat_receiver, admin_client):
    group = _finance_group()
    AlertRule.objects.create(
        name="Every approval", trigger=AlertTrigger.OPENED, notify_group=group, chat_system=_chat_system(chat_receiver)
    )
    item = _item(hours_old=0)
    alerts_run()
    response = admin_client.get(f"/admin/exception_queue/exceptionitem/{item.pk}/change/")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'id="alerts"' in text
    sent = Alert.objects.get(item=item, channel=AlertChannel.EMAIL).sent_at.strftime("%Y-%m-%d %H:%M")
    assert "Alerted" in text and "finance-uk</strong> by email" in text and sent in text


def test_a_failing_chat_webhook_is_retried_with_backoff_then_given_up(chat_receiver):
    rule = AlertRule.objects.create(
        name="Chat only", trigger=AlertTrigger.OPENED, by_email=False, chat_system=_chat_system(chat_receiver)
    )
    _item(hours_old=0)
    chat_receiver.fail_next = 1
    # when the webhook answers 503 once
    assert alerts_run().retrying == 1
    alert = Alert.objects.get(rule=rule)
    assert alert.status == AlertStatus.PENDING and alert.attempts == 1 and "503" in alert.last_error
    # then it is not resent before its backoff, and is sent once after it
    assert alerts_run().sent == 0
    retried = alerts_run(now=timezone.now() + datetime.timedelta(minutes=2))
    assert retried.sent == 1, Alert.objects.get(rule=rule).last_error
    assert len(chat_receiver.posts) == 1
    # and a webhook that keeps failing is given up after MAX_ATTEMPTS, with an audit event saying why
    _item(hours_old=0)
    chat_receiver.fail_next = 100
    later = timezone.now()
    for _ in range(MAX_ATTEMPTS):
        later += datetime.timedelta(hours=2)
        alerts_run(now=later)
    failed = Alert.objects.get(rule=rule, status=AlertStatus.FAILED)
    assert failed.attempts == MAX_ATTEMPTS
    assert AuditEvent.objects.filter(action="alert.failed", object_id=str(failed.pk)).exists()


def test_a_group_without_email_addresses_fails_at_once_with_what_to_do():
    group = Group.objects.create(name="nobody-reads")
    get_user_model().objects.create_user(username="silent", email="", password="x").groups.add(group)
    AlertRule.objects.create(name="Unreadable", trigger=AlertTrigger.OPENED, notify_group=group)
    _item(hours_old=0)
    assert alerts_run().failed == 1
    alert = Alert.objects.get()
    assert alert.status == AlertStatus.FAILED and alert.attempts == 1
    assert "Add an address to the users" in alert.last_error
    assert mail.outbox == []


def test_matching_by_entity_and_amount(chat_receiver):
    uk = LegalEntity.objects.create(
        code="UK9", name="UK 9", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    group = _finance_group()
    AlertRule.objects.create(
        name="Big UK items",
        trigger=AlertTrigger.OPENED,
        legal_entity=uk,
        min_amount=Decimal("50000"),
        notify_group=group,
    )
    big_uk = _item(hours_old=0, entity=uk)
    _item(hours_old=0, amount="100.00", entity=uk)
    _item(hours_old=0)  # no entity
    _item(hours_old=0, amount=None, entity=uk)
    alert_rules_evaluate()
    assert list(Alert.objects.values_list("item_id", flat=True)) == [big_uk.pk]


def test_a_daily_digest_once_a_day_and_an_escalation_once(chat_receiver):
    group, bosses = _finance_group(), _finance_group("finance-leads")
    AlertRule.objects.create(
        name="Digest",
        trigger=AlertTrigger.PAST_SLA,
        sla_hours=2,
        cadence=AlertCadence.DAILY_DIGEST,
        digest_hour=8,
        notify_group=group,
        escalate_group=bosses,
        escalate_after_hours=10,
        chat_system=_chat_system(chat_receiver, flavour=ChatFlavour.TEAMS),
    )
    # a day ahead of the clock, so every age below is exact: one item opened at 05:00, one the evening before
    day = (timezone.now() + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    old, older = _item(hours_old=0), _item(hours_old=0)
    ExceptionItem.objects.filter(pk=old.pk).update(created_at=day.replace(hour=5))
    ExceptionItem.objects.filter(pk=older.pk).update(created_at=day - datetime.timedelta(hours=6))
    # at 07:00, before the digest hour: only the escalation of the item open 13 h (2 h SLA + 10 h)
    alerts_run(now=day.replace(hour=7))
    assert set(Alert.objects.values_list("kind", "item_id")) == {(AlertKind.ESCALATION, older.pk)}
    assert sorted(mail.outbox[0].to) == ["fiona@finance-leads.example", "frank@finance-leads.example"]
    # at 09:00 and at noon: one digest naming both items, on both channels, in the Teams card format
    alerts_run(now=day.replace(hour=9))
    alerts_run(now=day.replace(hour=12))
    assert Alert.objects.filter(kind=AlertKind.DIGEST).count() == 2
    card = next(post for post in chat_receiver.posts if "Daily digest" in post["title"])
    assert card["@type"] == "MessageCard" and f"#{old.pk}" in card["text"] and f"#{older.pk}" in card["text"]
    # the next day at 09:00: a new digest, and the other item, open 28 h now, escalates; each escalation once
    alerts_run(now=day.replace(hour=9) + datetime.timedelta(days=1))
    alerts_run(now=day.replace(hour=10) + datetime.timedelta(days=1))
    assert Alert.objects.filter(kind=AlertKind.DIGEST).count() == 4
    escalated = Alert.objects.filter(kind=AlertKind.ESCALATION).values_list("item_id", flat=True)
    assert sorted(escalated) == sorted([old.pk, old.pk, older.pk, older.pk])  # email + chat each
    assert Alert.objects.exclude(status=AlertStatus.SENT).count() == 0


def test_a_paused_chat_system_holds_the_alert_without_using_an_attempt(chat_receiver):
    system = _chat_system(chat_receiver)
    AlertRule.objects.create(name="Paused chat", trigger=AlertTrigger.OPENED, by_email=False, chat_system=system)
    _item(hours_old=0)
    ConnectedSystem.objects.filter(pk=system.pk).update(state="paused")
    assert alerts_run().retrying == 1
    alert = Alert.objects.get()
    assert (alert.status, alert.attempts, chat_receiver.posts) == (AlertStatus.PENDING, 0, [])
    assert "paused" in alert.last_error.lower()
    ConnectedSystem.objects.filter(pk=system.pk).update(state="active")
    assert alerts_run(now=timezone.now() + datetime.timedelta(minutes=1)).sent == 1
    assert len(chat_receiver.posts) == 1


def test_a_rule_says_what_is_missing():
    with pytest.raises(ValidationError) as refused:
        AlertRule(name="Nobody", trigger=AlertTrigger.OPENED).full_clean()
    assert "choose a group, a person, or both" in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        AlertRule(name="No channel", by_email=False).full_clean()
    assert "Choose at least one channel" in str(refused.value)
