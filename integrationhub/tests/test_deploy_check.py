"""Secure defaults: `check --deploy` is clean in production, and the security headers go out on every page."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.test import Client

PRODUCTION_ENV = {
    "DEBUG": "false",
    "HUB_SECURE_SSL_REDIRECT": "true",
    "HUB_HSTS_PRELOAD": "true",
    "ALLOWED_HOSTS": "hub.example.com",
}


def run_manage(
    args: list[str], env: dict[str, str], tmp_path, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        # The browser tests set DJANGO_ALLOW_ASYNC_UNSAFE in this process; a deployment never has it.
        env={
            **{k: v for k, v in os.environ.items() if k not in {"DJANGO_ALLOW_ASYNC_UNSAFE", *unset}},
            "HUB_VAR_DIR": str(tmp_path),
            # The product's settings, as deployed (the suite's own add throwaway keys when they are unset).
            "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
            **env,
        },
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    secret_key = "".join(secrets.choice(string.ascii_letters + string.digits + "!@#%^&*(-_=+)") for _ in range(50))
    result = run_manage(
        ["check", "--deploy", "--fail-level", "WARNING"], {**PRODUCTION_ENV, "SECRET_KEY": secret_key}, tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy_flags_the_development_key_and_plain_http(tmp_path):
    # given the embedded default (no DATABASE_URL) with DEBUG off and no SECRET_KEY: it starts, with warnings
    result = run_manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {"DEBUG": "false"},
        tmp_path,
        unset=("DATABASE_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY"),
    )
    assert result.returncode != 0
    for warning in ("integrationhub.W001", "security.W008", "security.W012"):
        assert warning in result.stdout + result.stderr


def test_every_page_carries_the_csp_and_hardening_headers(db):
    response = Client().get("/admin/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"


def test_password_validators_refuse_numeric_and_user_like_passwords(django_user_model, db):
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    user = django_user_model(username="margaret.finance", email="margaret@example.com")
    for weak in ("8675309123456", "margaret.finance1", "short"):
        with pytest.raises(ValidationError):
            validate_password(weak, user)
    validate_password("correct horse battery staple 42", user)
