"""An inbound event with a NUL character (\\u0000) is refused with 400 problem+json before anything is stored:
PostgreSQL's JSON cannot hold one, so it would otherwise fail inside the INSERT."""

from __future__ import annotations

import pytest

from sync.models import Message
from sync.tests.conftest import signed_post

pytestmark = pytest.mark.django_db


def test_an_event_with_a_nul_character_is_400_and_not_stored(client, make_flow):
    # given a signed event whose name holds an escaped NUL
    flow = make_flow()
    body = '{"Id": "C-1", "Name": "Ac\\u0000me", "Status": "active", "UpdatedAt": "2026-11-26T10:00:00Z"}'

    # when it is posted
    response = signed_post(client, flow, None, body=body)

    # then 400 problem+json says what to remove, and no message is stored
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert "NUL" in response.json()["detail"]
    assert not Message.objects.exists()


def test_an_escaped_backslash_before_u0000_is_not_a_nul(client, make_flow):
    # given a name that contains the six characters \u0000 as text (an escaped backslash)
    flow = make_flow()
    body = '{"Id": "C-2", "Name": "Ac\\\\u0000me", "Status": "active", "UpdatedAt": "2026-11-26T10:00:00Z"}'

    # when it is posted
    response = signed_post(client, flow, None, body=body)

    # then it is stored as sent
    assert response.status_code == 202, response.content
    assert Message.objects.get().raw_payload["Name"] == "Ac\\u0000me"
