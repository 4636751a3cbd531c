"""The sync admin: messages are read-only, searchable by correlation id or a record's id, with their trace."""

from __future__ import annotations

import pytest

from sync.models import Delivery, Message
from sync.services import delivery_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _delivered(client, flow, canonical_id: str, correlation_id: str) -> Message:
    response = signed_post(client, flow, client_record(canonical_id), headers={"X-Correlation-ID": correlation_id})
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    return message


def test_messages_are_found_by_correlation_id_source_id_and_target_id(client, client_as, make_flow, target):
    # given two delivered messages
    flow = make_flow(target.url)
    wanted = _delivered(client, flow, "C-1", "corr-admin-1")
    other = _delivered(client, flow, "C-2", "corr-admin-2")
    auditor = client_as("auditor")
    # when the message list is searched by each kind of id
    for term in ("corr-admin-1", "C-1", "T-client-C-1"):
        page = auditor.get("/admin/sync/message/", {"q": term})
        # then only the wanted message is listed
        assert page.status_code == 200
        listed = {message.pk for message in page.context["cl"].result_list}
        assert listed == {wanted.pk}, term
    assert other.pk not in listed


def test_the_message_page_is_read_only_and_shows_the_trace_of_attempts(client, client_as, make_flow, target):
    # given a delivered message
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-3", "corr-admin-3")
    # when an integration admin opens it
    page = client_as("integration_admin").get(f"/admin/sync/message/{message.pk}/change/")
    # then the trace table lists the stages and the attempt, and nothing can be saved
    html = page.content.decode()
    assert page.status_code == 200
    assert 'class="hub-trace"' in html and "attempt:delivered" in html and "<td>queued</td>" in html
    assert 'name="_save"' not in html
