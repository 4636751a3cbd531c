"""Standard Webhooks for the sandbox systems: the hub's own implementation, so that what the sandbox CRM signs is
checked by exactly the code that checks a real sender's webhooks (connectors.webhooks)."""

from __future__ import annotations

from connectors.webhooks import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SECRET_PREFIX,
    SIGNATURE_VERSION,
    generate_webhook_secret,
    sign_standard_webhook,
    standard_webhook_headers,
    verify_standard_webhook,
    verify_standard_webhook_headers,
)

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SECRET_PREFIX",
    "SIGNATURE_VERSION",
    "generate_webhook_secret",
    "sign_standard_webhook",
    "standard_webhook_headers",
    "verify_standard_webhook",
    "verify_standard_webhook_headers",
]
