"""Standard Webhooks signing and verification (https://www.standardwebhooks.com), as pure functions.

The hub's inbound endpoint verifies every webhook with `verify_standard_webhook` (sync.services.message_ingest);
the sandbox systems sign what they send with `sign_standard_webhook` (sandbox.webhooks re-exports this module).
The signed content is f"{msg_id}.{timestamp}.{body}", the key is the base64 part of a "whsec_..." secret, and
`webhook-signature` holds one or more space-separated "v1,<base64>".

Our own implementation rather than the `standardwebhooks` package: it is some 60 lines of standard library,
checked against the specification's example (connectors/tests/test_webhooks.py), and one dependency fewer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300  # the spec's recommendation: five minutes either way

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


def generate_webhook_secret() -> str:
    """A new random secret in the "whsec_<base64 of 32 bytes>" form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError as error:
        raise ValueError("A Standard Webhooks secret is 'whsec_' followed by base64.") from error


def _as_text(body: bytes | str) -> str:
    return body.decode("utf-8") if isinstance(body, bytes) else body


def sign_standard_webhook(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The `webhook-signature` value for one message: "v1,<base64 HMAC-SHA256 of id.timestamp.body>"."""
    content = f"{msg_id}.{int(timestamp)}.{_as_text(body)}".encode()
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def standard_webhook_headers(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
    """The three headers a sender adds to the POST."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(int(timestamp)),
        HEADER_SIGNATURE: sign_standard_webhook(secret, msg_id, timestamp, body),
    }


def verify_standard_webhook(
    secret: str,
    msg_id: str,
    timestamp: str | int,
    signature_header: str,
    body: bytes | str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when one of the v1 signatures matches and the timestamp is within the tolerance of `now`.

    Pure: no clock unless `now` is left out, no I/O, never raises on bad input (a malformed header,
    timestamp, secret or body is simply not verified).
    """
    if not msg_id or not secret:
        return False
    try:
        sent_at = int(str(timestamp).strip())
        key = _key(secret)
        text = _as_text(body)
    except (ValueError, UnicodeDecodeError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        return False
    content = f"{msg_id}.{sent_at}.{text}".encode()
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for candidate in (signature_header or "").split():
        version, _, signature = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(signature, expected):
            return True
    return False


def verify_standard_webhook_headers(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """`verify_standard_webhook` reading the three headers from a (case-insensitive or lower-case) mapping."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return verify_standard_webhook(
        secret,
        lowered.get(HEADER_ID, ""),
        lowered.get(HEADER_TIMESTAMP, ""),
        lowered.get(HEADER_SIGNATURE, ""),
        body,
        tolerance_seconds=tolerance_seconds,
        now=now,
    )
