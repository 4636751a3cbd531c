"""The admin login lockout: per user name and address, and per address across user names (password spraying);
a locked-out login page says so and for how long instead of "wrong password"."""

from __future__ import annotations

import re
import uuid

import pytest
from django.test import Client

from integrationhub.audit import AuditAction
from integrationhub.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "test-password-123"  # make_role_user's


def fresh_address() -> str:
    """An address no earlier run used: the counts live in the shared cache, which outlives the test database."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}::{uuid.uuid4().hex[:4]}"


def login(client: Client, username: str, password: str):
    return client.post("/admin/login/", {"username": username, "password": password})


def page_text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


def test_a_locked_account_is_told_so_and_for_how_long_even_with_the_right_password(make_role_user, settings):
    # given a lockout after 3 failures for 15 minutes
    settings.HUB_LOGIN_MAX_FAILURES = 3
    settings.HUB_LOGIN_LOCKOUT_MINUTES = 15
    user = make_role_user("analyst", username=f"dana-{uuid.uuid4().hex[:8]}")
    client = Client(REMOTE_ADDR=fresh_address())
    first = login(client, user.username, "wrong-password-1")
    for _ in range(2):
        login(client, user.username, "wrong-password-1")

    # when the right password is typed
    response = login(client, user.username, PASSWORD)

    # then the page says the account is locked and for how long, not that the password is wrong
    text = page_text(response)
    assert "_auth_user_id" not in client.session
    assert "correct username and password" in page_text(first)
    assert "This account is locked for 15 minutes" in text
    assert re.search(r"until \d\d:\d\d UTC", text)
    assert "correct username and password" not in text


def test_failed_logins_for_many_user_names_lock_the_address_out(make_role_user, settings):
    # given at most 4 failed logins per address and window, for any user names, and a real user
    settings.HUB_LOGIN_MAX_FAILURES = 5
    settings.HUB_LOGIN_MAX_FAILURES_PER_ADDRESS = 4
    user = make_role_user("analyst", username=f"erin-{uuid.uuid4().hex[:8]}")
    sprayer_address = fresh_address()
    sprayer = Client(REMOTE_ADDR=sprayer_address)

    # when one address tries one password on four user names (each stays below its own limit of 5)
    for n in range(4):
        login(sprayer, f"victim-{n}-{uuid.uuid4().hex[:6]}", "Summer2026!")
    # and then the real user's right password comes from that address, and from another
    same_address = login(sprayer, user.username, PASSWORD)
    elsewhere = Client(REMOTE_ADDR=fresh_address())
    other_address = login(elsewhere, user.username, PASSWORD)

    # then the address is locked out, says so, and the lockout is audited once; the user elsewhere gets in
    assert same_address.status_code == 200 and "_auth_user_id" not in sprayer.session
    assert "Logins from your network address are locked" in page_text(same_address)
    assert other_address.status_code == 302 and "_auth_user_id" in elsewhere.session
    locks = AuditEvent.objects.filter(action=AuditAction.LOGIN_LOCKED, object_type="client_address")
    assert list(locks.values_list("object_id", flat=True)) == [sprayer_address]


def test_a_successful_login_does_not_reset_the_address_count(make_role_user, settings):
    # given at most 3 failed logins per address, and a sprayer who owns one real account
    settings.HUB_LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    own = make_role_user("analyst", username=f"mallory-{uuid.uuid4().hex[:8]}")
    sprayer = Client(REMOTE_ADDR=fresh_address())

    # when it fails twice, logs in to its own account, then fails twice more
    for n in range(2):
        login(sprayer, f"victim-{n}-{uuid.uuid4().hex[:6]}", "Summer2026!")
    assert login(sprayer, own.username, PASSWORD).status_code == 302
    sprayer.logout()
    for n in range(2):
        login(sprayer, f"victim-b{n}-{uuid.uuid4().hex[:6]}", "Summer2026!")

    # then its own account is locked out from that address too
    response = login(sprayer, own.username, PASSWORD)
    assert "_auth_user_id" not in sprayer.session
    assert "Logins from your network address are locked" in page_text(response)
