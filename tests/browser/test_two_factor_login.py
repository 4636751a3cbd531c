"""Two-factor login in a real browser: a finance approver whose role requires it enrols with the QR code
drawn on the page (under the hub's Content-Security-Policy), lands in the admin, and a later login with a
wrong code stays on the code page."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrationhub import roles
from integrationhub.landing import role_landing_url
from tests.browser.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-2fa-password-41"


def code_of(device: TOTPDevice, shift: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{(totp.token() + shift) % 10**device.digits:0{device.digits}d}"


def test_a_required_user_enrols_with_the_qr_code_then_a_wrong_code_is_refused(page, browser, live_server, settings):
    # given finance approvers must use two-factor login, and one who has not enrolled
    settings.HUB_REQUIRE_2FA_GROUPS = ["finance_approver"]
    roles.roles_sync()
    username = f"fin-{uuid.uuid4().hex[:6]}"
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name="finance_approver"))

    # when they log in with the password
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")

    # then the enrolment page shows a QR code drawn in the page and the key to type by hand
    page.wait_for_url(f"{live_server.url}/admin/two-factor/")
    qr = page.locator(".two-factor-qr svg")
    qr.wait_for(state="visible")
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    secret = page.locator("#two-factor-secret").inner_text()
    assert len(secret) >= 16
    screenshot(page, "two_factor_enrolment")

    # when they type the code of the new authenticator
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    page.fill("#id_code", code_of(device))
    page.click("input[type=submit]")

    # then they are in the admin, on their role's page
    page.wait_for_url(f"{live_server.url}{role_landing_url(user=user)}")
    assert username.upper() in page.locator("#user-tools").inner_text().upper()

    # when they log in again elsewhere and type a wrong code
    other = browser.new_context(viewport={"width": 1366, "height": 900})
    second = other.new_page()
    second.goto(f"{live_server.url}/admin/login/")
    second.fill("#id_username", username)
    second.fill("#id_password", PASSWORD)
    second.click("input[type=submit]")
    second.wait_for_url(f"{live_server.url}/admin/two-factor/verify/")
    device.refresh_from_db()
    second.fill("#id_code", code_of(device, shift=1))
    second.click("input[type=submit]")

    # then the code page says so and the admin stays closed
    assert "not valid" in second.locator(".errornote").inner_text()
    screenshot(second, "two_factor_wrong_code")
    second.goto(f"{live_server.url}/admin/")
    assert "/admin/login/" in second.url
    other.close()
