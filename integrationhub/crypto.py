"""Field encryption at rest with Fernet; FIELD_ENCRYPTION_KEY may list several keys for rotation."""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

logger = logging.getLogger(__name__)


def _embedded_key() -> str:
    # With no FIELD_ENCRYPTION_KEY (the embedded default) a key is generated once into var/, so a
    # first run works and the secrets still never sit in the database in clear.
    key_file = settings.VAR_DIR / "field-encryption.key"
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode())
        key_file.chmod(0o600)
        logger.warning("FIELD_ENCRYPTION_KEY is not set; generated a key in var/ for this installation")
    return key_file.read_text().strip()


@cache
def field_cipher() -> MultiFernet:
    """The cipher: encrypts with the first key, decrypts with any of them."""
    raw = settings.FIELD_ENCRYPTION_KEY or _embedded_key()
    keys = [part.strip() for part in raw.split(",") if part.strip()]
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys; generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        ) from exc


def encrypt_text(plaintext: str) -> str:
    return field_cipher().encrypt(plaintext.encode()).decode()


def decrypt_text(token: str) -> str:
    try:
        return field_cipher().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "An encrypted field could not be decrypted with any key in FIELD_ENCRYPTION_KEY; "
            "add the key it was written with back to the list."
        ) from exc


def rotate_token(token: str) -> str:
    """Re-encrypt a stored token with the current first key (used by `manage.py rotate_field_keys`)."""
    return field_cipher().rotate(token.encode()).decode()


class EncryptedJSONField(models.TextField):
    """A JSON value stored as a Fernet token. Empty values are stored as an empty string."""

    description = "JSON encrypted at rest with Fernet"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if not value:
            return {}
        return json.loads(decrypt_text(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if not value:
            return {}
        if isinstance(value, str):
            return json.loads(value)
        return value

    def get_prep_value(self, value: Any) -> str:
        if not value:
            return ""
        return encrypt_text(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: Any) -> str:
        # Serialisation (dumpdata, fixtures) never writes the secret in clear.
        return ""


class EncryptedTextField(models.TextField):
    """A string stored as a Fernet token. Empty values are stored as an empty string."""

    description = "Text encrypted at rest with Fernet"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        return decrypt_text(value) if value else ""

    def get_prep_value(self, value: Any) -> str:
        return encrypt_text(str(value)) if value else ""

    def value_to_string(self, obj: Any) -> str:
        return ""
