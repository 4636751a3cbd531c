"""Secrets at rest: the raw columns hold Fernet tokens, and rotate_field_keys re-encrypts them."""

from __future__ import annotations

import io
import json

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.core.management import call_command
from django.db import connection

from connectors.models import ConnectedSystem
from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.crypto import field_cipher

pytestmark = pytest.mark.django_db

CREDENTIALS = {"api_key": "plain-api-key-4242"}
WEBHOOK_SECRET = "plain-webhook-secret-4242"


def _raw(system_id: int) -> tuple[str, str]:
    table = ConnectedSystem._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT credentials, webhook_secret FROM {table} WHERE id = %s", [system_id])
        return cursor.fetchone()


@pytest.fixture
def keys(settings):
    """Two fresh Fernet keys; the cipher cache is cleared whenever the setting changes."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    field_cipher.cache_clear()
    yield old, new
    field_cipher.cache_clear()


def test_secrets_are_encrypted_in_the_database_column(keys):
    # given a system saved with credentials and a webhook secret
    system = ConnectedSystemFactory(credentials=CREDENTIALS, webhook_secret=WEBHOOK_SECRET)
    # when the raw columns are read with SQL
    raw_credentials, raw_secret = _raw(system.pk)
    # then neither holds the plaintext, and both decrypt to it with the key
    assert "plain-api-key-4242" not in raw_credentials
    assert WEBHOOK_SECRET not in raw_secret
    cipher = Fernet(keys[0].encode())
    assert json.loads(cipher.decrypt(raw_credentials.encode())) == CREDENTIALS
    assert cipher.decrypt(raw_secret.encode()).decode() == WEBHOOK_SECRET
    # and the model reads them back decrypted
    assert ConnectedSystem.objects.get(pk=system.pk).credentials == CREDENTIALS


def test_rotation_re_encrypts_with_the_first_key(keys, settings):
    # given secrets written with the old key, and an empty secret on another system
    old, new = keys
    system = ConnectedSystemFactory(credentials=CREDENTIALS, webhook_secret=WEBHOOK_SECRET)
    ConnectedSystemFactory(credentials={}, webhook_secret="")
    before = _raw(system.pk)
    # when the new key is put first and the command runs
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    field_cipher.cache_clear()
    out = io.StringIO()
    call_command("rotate_field_keys", stdout=out)
    # then it reports counts, and the raw tokens changed and decrypt with the new key alone
    assert "secrets re-encrypted: 2" in out.getvalue()
    assert "empty values skipped: 2" in out.getvalue()
    after = _raw(system.pk)
    assert after != before
    only_new = MultiFernet([Fernet(new.encode())])
    assert json.loads(only_new.decrypt(after[0].encode())) == CREDENTIALS
    assert only_new.decrypt(after[1].encode()).decode() == WEBHOOK_SECRET
    # and once the old key is removed the model still reads the secrets
    settings.FIELD_ENCRYPTION_KEY = new
    field_cipher.cache_clear()
    stored = ConnectedSystem.objects.get(pk=system.pk)
    assert stored.credentials == CREDENTIALS
    assert stored.webhook_secret == WEBHOOK_SECRET


def test_rotation_does_not_write_history_rows(keys, settings):
    system = ConnectedSystemFactory(credentials=CREDENTIALS)
    rows_before = system.history.count()
    settings.FIELD_ENCRYPTION_KEY = f"{keys[1]},{keys[0]}"
    field_cipher.cache_clear()
    call_command("rotate_field_keys", stdout=io.StringIO())
    assert system.history.count() == rows_before


def test_rotation_without_the_old_key_fails_and_changes_nothing(keys, settings):
    # given a secret written with a key that is then dropped from the list
    system = ConnectedSystemFactory(credentials=CREDENTIALS)
    before = _raw(system.pk)
    settings.FIELD_ENCRYPTION_KEY = keys[1]
    field_cipher.cache_clear()
    # when the rotation runs, then it names the row and leaves the column as it was
    with pytest.raises(Exception, match="cannot be decrypted"):
        call_command("rotate_field_keys", stdout=io.StringIO())
    assert _raw(system.pk) == before
