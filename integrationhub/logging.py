"""Structured JSON logging with a correlation id carried through requests and tasks."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse

CORRELATION_HEADER = "X-Correlation-ID"
_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def current_correlation_id() -> str | None:
    return _correlation_id.get()


def bind_correlation_id(value: str | None) -> None:
    _correlation_id.set(value)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def correlation_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """X-Correlation-ID when given, else the trace id of a W3C `traceparent`, else None. `headers` is either
    case-insensitive (request.headers) or has lower-case names."""
    supplied = headers.get(CORRELATION_HEADER.lower(), "")
    if supplied and supplied.isprintable():
        return supplied[:64]
    match = _TRACEPARENT.match(headers.get("traceparent", "").strip().lower())
    if match and match.group("trace") != "0" * 32:
        return match.group("trace")
    return None


class CorrelationIdFilter(logging.Filter):
    """Adds the current correlation id to every record so the formatter can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            record.correlation_id = current_correlation_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation id and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        correlation_id = getattr(record, "correlation_id", None)
        if correlation_id:
            entry["correlation_id"] = correlation_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry and key != "correlation_id" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class CorrelationIdMiddleware:
    """Takes X-Correlation-ID from the request (or makes one), binds it for logs and echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        correlation_id = correlation_id_from_headers(request.headers) or new_correlation_id()
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        token = _correlation_id.set(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            _correlation_id.reset(token)
        response[CORRELATION_HEADER] = correlation_id
        return response
