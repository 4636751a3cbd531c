"""The production start-up rule for the two keys: with DEBUG off and DATABASE_URL set, the hub does not start
without a real SECRET_KEY and FIELD_ENCRYPTION_KEY.

Checked while the settings load (settings.py calls `production_keys_require`), not in a system check: a system
check stops runserver only, while an error raised from the settings stops every process that reads them, that is
manage.py, gunicorn, the Celery worker and beat, before any of them does anything. Plain Python on purpose: Django is
not set up yet when this runs.
"""

from __future__ import annotations

import base64
import binascii

from django.core.exceptions import ImproperlyConfigured

# The development SECRET_KEY of the embedded default (settings.py). It and the placeholders printed in this
# repository (.env.example, the Dockerfile's build step) are public: never a production key.
EMBEDDED_SECRET_KEY = "insecure-embedded-default-key-set-SECRET_KEY-in-production"
PUBLIC_SECRET_KEYS = frozenset({EMBEDDED_SECRET_KEY, "change-me", "build-only"})
PUBLIC_FIELD_ENCRYPTION_KEYS = frozenset({"change-me"})

GENERATE_SECRET_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
GENERATE_FIELD_ENCRYPTION_KEY = (
    "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
)


def _is_fernet_key(key: str) -> bool:
    # What cryptography's Fernet(key) accepts: 32 bytes, url-safe base64. Checked without importing cryptography
    # (whose import costs every process start) since the settings module runs this.
    try:
        return len(base64.urlsafe_b64decode(key.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def production_key_problems(*, secret_key: str, field_encryption_key: str) -> list[str]:
    """What is wrong with the two keys for a production run: missing, public, or (encryption) not a Fernet key."""
    problems = []
    if not secret_key.strip():
        problems.append("SECRET_KEY is not set")
    elif secret_key.strip() in PUBLIC_SECRET_KEYS:
        problems.append("SECRET_KEY is a public development default")
    keys = [part.strip() for part in field_encryption_key.split(",") if part.strip()]
    if not keys:
        problems.append("FIELD_ENCRYPTION_KEY is not set")
    elif any(key in PUBLIC_FIELD_ENCRYPTION_KEYS for key in keys):
        problems.append("FIELD_ENCRYPTION_KEY is a public development default")
    else:
        problems += [
            f"FIELD_ENCRYPTION_KEY's key #{position} is not a Fernet key"
            for position, key in enumerate(keys, start=1)
            if not _is_fernet_key(key)
        ]
    return problems


def production_keys_require(*, debug: bool, database_url: str, secret_key: str, field_encryption_key: str) -> None:
    """Raise ImproperlyConfigured, naming the variables to set and how to make them, when a production run (DEBUG
    off, and a database named by DATABASE_URL rather than the embedded SQLite default) lacks a real key.

    The embedded default (no DATABASE_URL) is a first run on a bare machine: the development SECRET_KEY and a key
    file generated into var/ do there (`manage.py check --deploy` still warns about the first).
    """
    if debug or not database_url.strip():
        return
    problems = production_key_problems(secret_key=secret_key, field_encryption_key=field_encryption_key)
    if not problems:
        return
    raise ImproperlyConfigured(
        "The hub will not start: DEBUG is off and DATABASE_URL is set (a production database), but "
        + "; ".join(problems)
        + ".\nSet these environment variables (in .env for docker compose) and start again:\n"
        + "  SECRET_KEY: 50 or more random characters, kept secret. Generate one with:\n"
        + f"      {GENERATE_SECRET_KEY}\n"
        + "  FIELD_ENCRYPTION_KEY: a Fernet key. Keep it safe: the stored credentials can only be read with it\n"
        + "      (comma-separated keys rotate, see the README). Generate one with:\n"
        + f"      {GENERATE_FIELD_ENCRYPTION_KEY}\n"
        + "The embedded SQLite default (no DATABASE_URL) and a development machine with DEBUG=true need neither."
    )
