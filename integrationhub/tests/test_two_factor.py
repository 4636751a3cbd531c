"""Two-factor login: an enrolled user needs a valid code after the password, a wrong code is refused and
audited, a user who has not enrolled logs in as before unless their group requires it, and an admin can
reset a lost device (audited)."""

from __future__ import annotations

import uuid

import pytest
from django.core.management import call_command
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrationhub.audit import AuditAction
from integrationhub.landing import role_landing_url
from integrationhub.models import AuditEvent
from integrationhub.twofactor import PENDING_SESSION_KEY, two_factor_enrolment_start

pytestmark = pytest.mark.django_db

PASSWORD = "test-password-123"


def current_code(device: TOTPDevice) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"


def wrong_code(device: TOTPDevice) -> str:
    return f"{(int(current_code(device)) + 1) % 10**device.digits:0{device.digits}d}"


def enrolled(user) -> TOTPDevice:
    device = TOTPDevice.objects.create(user=user, name="authenticator app", confirmed=True)
    return device


def password_login(client: Client, username: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": PASSWORD})


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def user_in(make_role_user):
    def make(role: str):
        return make_role_user(role, username=f"{role}-{uuid.uuid4().hex[:8]}")

    return make


def test_an_enrolled_user_needs_a_valid_code_after_the_password(user_in):
    # given a finance approver with a confirmed authenticator
    user = user_in("finance_approver")
    device = enrolled(user)
    client = Client()

    # when the password is right
    response = password_login(client, user.username)

    # then the login is not complete: the code page comes next and the admin is still closed
    assert response.status_code == 302 and response["Location"] == "/admin/two-factor/verify/"
    assert not logged_in(client)
    assert client.get("/admin/").status_code == 302
    assert client.get("/api/v1/legal-entities/").status_code in (401, 403)

    # when the current code is typed
    done = client.post("/admin/two-factor/verify/", {"code": current_code(device)})

    # then the user is logged in and lands where they were going
    assert done.status_code == 302 and done["Location"] == role_landing_url(user=user)
    assert client.session["_auth_user_id"] == str(user.pk)
    assert PENDING_SESSION_KEY not in client.session
    assert client.get("/admin/").status_code == 200


def test_a_wrong_code_is_refused_and_audited_as_a_failed_login(user_in):
    # given an enrolled integration admin past the password step
    user = user_in("integration_admin")
    device = enrolled(user)
    client = Client(REMOTE_ADDR="192.0.2.44")
    password_login(client, user.username)

    # when a wrong code is typed
    response = client.post("/admin/two-factor/verify/", {"code": wrong_code(device)})

    # then the page answers with an error, nobody is logged in, and the failure is audited without the code
    assert response.status_code == 400
    assert not logged_in(client)
    event = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED, object_id=user.username)
    assert event.details == {"stage": "two_factor"} and event.ip == "192.0.2.44"
    assert "two-factor" in event.summary


def test_repeated_wrong_codes_lock_the_login_even_for_the_right_code(user_in, settings):
    # given a lockout after 3 failures and an enrolled user past the password step
    settings.HUB_LOGIN_MAX_FAILURES = 3
    user = user_in("finance_approver")
    device = enrolled(user)
    client = Client(REMOTE_ADDR="192.0.2.45")
    password_login(client, user.username)

    # when three wrong codes are typed (the device's own throttle reset between them), then the right one
    for _ in range(3):
        TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
        client.post("/admin/two-factor/verify/", {"code": wrong_code(device)})
    device.refresh_from_db()
    response = client.post("/admin/two-factor/verify/", {"code": current_code(device)})

    # then the login stays refused and the lockout is audited
    assert response.status_code == 400 and not logged_in(client)
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_LOCKED, object_id=user.username).count() == 1


def test_a_user_who_has_not_enrolled_logs_in_with_the_password_when_not_required(user_in, settings):
    # given no group requires two-factor login and an analyst without an authenticator
    settings.HUB_REQUIRE_2FA_GROUPS = []
    user = user_in("analyst")
    client = Client()

    # when the password is right
    response = password_login(client, user.username)

    # then the login completes at once
    assert response.status_code == 302 and response["Location"] == role_landing_url(user=user)
    assert logged_in(client)
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_a_required_user_who_has_not_enrolled_is_sent_to_enrolment_and_logged_in_after_it(user_in, settings):
    # given finance approvers must use two-factor login, and one has not enrolled
    settings.HUB_REQUIRE_2FA_GROUPS = ["finance_approver"]
    user = user_in("finance_approver")
    client = Client()

    # when the password is right
    response = password_login(client, user.username)

    # then enrolment comes first, with a QR code drawn inline and the secret, and no session yet
    assert response.status_code == 302 and response["Location"] == "/admin/two-factor/"
    assert not logged_in(client)
    page = client.get("/admin/two-factor/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "two-factor-secret" in html
    assert "http://" not in html.split("<svg", 1)[1].split("</svg>", 1)[0].replace("http://www.w3.org", "")
    device = TOTPDevice.objects.get(user=user, confirmed=False)

    # when a wrong code is typed, nothing is confirmed and there is still no session
    assert client.post("/admin/two-factor/", {"code": wrong_code(device)}).status_code == 400
    assert not logged_in(client) and not TOTPDevice.objects.filter(user=user, confirmed=True).exists()

    # when the code of the new authenticator is typed
    done = client.post("/admin/two-factor/", {"code": current_code(device)})

    # then the device is confirmed, the enrolment audited, and the login completes
    assert done.status_code == 302 and done["Location"] == role_landing_url(user=user)
    assert logged_in(client)
    assert TOTPDevice.objects.get(user=user).confirmed
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_ENROLLED, actor_id=user.pk).count() == 1


def test_a_user_outside_the_required_groups_is_not_asked_to_enrol(user_in, settings):
    # given only finance approvers must use two-factor login
    settings.HUB_REQUIRE_2FA_GROUPS = ["finance_approver"]
    user = user_in("auditor")
    client = Client()

    # when an auditor logs in with the password
    response = password_login(client, user.username)

    # then the login completes without enrolment
    assert response.status_code == 302 and response["Location"] == role_landing_url(user=user)
    assert logged_in(client)


def test_a_logged_in_user_can_opt_in_and_the_next_login_asks_for_a_code(user_in):
    # given a logged-in integration admin without an authenticator
    user = user_in("integration_admin")
    client = Client()
    password_login(client, user.username)
    assert logged_in(client)

    # when they set up an authenticator on the two-factor page
    assert client.get("/admin/two-factor/").status_code == 200
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert client.post("/admin/two-factor/", {"code": current_code(device)}).status_code == 302

    # then their next login stops after the password
    again = Client()
    assert password_login(again, user.username)["Location"] == "/admin/two-factor/verify/"
    assert not logged_in(again)


def test_the_code_page_without_a_password_step_goes_back_to_the_login(user_in):
    # given an enrolled user and a visitor who never gave the password
    user = user_in("finance_approver")
    device = enrolled(user)
    visitor = Client()

    # when the visitor posts a valid code straight to the code page
    response = visitor.post("/admin/two-factor/verify/", {"code": current_code(device)})

    # then it is sent to the login and nobody is logged in
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not logged_in(visitor)


def test_an_admin_resets_a_lost_device_and_the_reset_is_audited(user_in, client_as, settings):
    # given an enrolled finance approver who lost their phone, and a superuser
    settings.HUB_REQUIRE_2FA_GROUPS = ["finance_approver"]
    user = user_in("finance_approver")
    device = enrolled(user)
    admin_client = client_as("superuser")

    # when the superuser runs the reset action on the device
    response = admin_client.post(
        "/admin/otp_totp/totpdevice/",
        {"action": "reset_selected", "_selected_action": [device.pk]},
    )

    # then the device is gone, the reset is audited with who did it, and the user must enrol again
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()
    event = AuditEvent.objects.get(action=AuditAction.TWO_FACTOR_RESET)
    assert event.object_id == str(user.pk) and event.actor_username.startswith("superuser")
    assert password_login(Client(), user.username)["Location"] == "/admin/two-factor/"


def test_a_role_without_the_permission_cannot_reset_devices(user_in, client_as):
    # given an enrolled user and an auditor
    device = enrolled(user_in("finance_approver"))
    auditor = client_as("auditor")

    # when the auditor tries the reset action
    auditor.post("/admin/otp_totp/totpdevice/", {"action": "reset_selected", "_selected_action": [device.pk]})

    # then nothing is reset and nothing is audited
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    assert not AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_RESET).exists()


def test_the_reset_command_removes_the_device_and_audits_the_reason(user_in):
    # given an enrolled user
    user = user_in("integration_admin")
    enrolled(user)
    two_factor_enrolment_start(user=user)

    # when an operator resets it from the command line
    call_command("two_factor_reset", user=user.username, reason="phone lost, ticket at the service desk")

    # then every authenticator of the user is gone and the reason is in the audit
    assert not TOTPDevice.objects.filter(user=user).exists()
    event = AuditEvent.objects.get(action=AuditAction.TWO_FACTOR_RESET)
    assert "phone lost" in event.summary and event.details["devices_removed"] == 2
