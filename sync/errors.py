"""Errors the inbound endpoint answers with; each renders as problem+json and says what the sender should do."""

from __future__ import annotations

from integrationhub.errors import HubError, HubNotFoundError


class UnknownSystemError(HubNotFoundError):
    code = "unknown_system"
    title = "No connected system has this slug"


class UnknownEventTypeError(HubError):
    status = 400
    code = "unknown_event_type"
    title = "The event type names no canonical entity"


class SignatureError(HubError):
    status = 401
    code = "bad_signature"
    title = "The webhook signature could not be verified"


class SystemPausedError(HubError):
    status = 423
    code = "system_paused"
    title = "The system is paused"


class PayloadTooLargeError(HubError):
    status = 413
    code = "payload_too_large"
    title = "The body is too large"


class MalformedPayloadError(HubError):
    status = 400
    code = "malformed_payload"
    title = "The body is not acceptable JSON"


class InboundRateLimitedError(HubError):
    status = 429
    code = "inbound_rate_limited"
    title = "Too many events from this system"

    def __init__(self, detail: str, *, retry_after: int, hint: str = "") -> None:
        super().__init__(detail, hint=hint)
        self.retry_after = retry_after


class InvalidHeaderError(HubError):
    status = 400
    code = "invalid_header"
    title = "A request header is not acceptable"


class StorageUnavailableError(HubError):
    status = 503
    code = "storage_unavailable"
    title = "The hub cannot store events right now"

    def __init__(self, detail: str, *, retry_after: int, hint: str = "") -> None:
        super().__init__(detail, hint=hint)
        self.retry_after = retry_after
