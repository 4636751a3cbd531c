"""The inbound webhook endpoint, answered in two places that share one function.

`inbound_answer` verifies, stores and answers one event. The Django view (`sync.api.views.inbound_webhook`)
calls it for the test client, `runserver` and anything else that goes through Django's handler.
`InboundWebhookApplication` wraps the hub's WSGI application: it answers a webhook POST itself and hands
every other request to Django. Why: webhooks are the busiest requests of the hub and a machine-to-machine
call with a signature needs none of the session, CSRF, authentication, messages, history or static-file
middleware, nor Django's request and response objects. Skipping them makes a webhook about 25% cheaper in
the web process (measured by `python -m bench events`: ingest alone 831 → 1,061 req/s).

What Django's stack would do for such a request is kept: the request_started and request_finished signals
(which manage database connections), the host check, the HTTPS redirect, the body limit, the correlation id,
the security headers and the request metrics. A request that needs anything else (another method, a
disallowed host, a plain-HTTP request that must be redirected, a NUL in the query string) goes to Django.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host

from integrationhub.errors import PROBLEM_CONTENT_TYPE, HubError, problem
from integrationhub.logging import (
    CORRELATION_HEADER,
    bind_correlation_id,
    correlation_id_from_headers,
    new_correlation_id,
)
from sync.errors import PayloadTooLargeError
from sync.services import max_body_bytes, message_ingest

logger = logging.getLogger(__name__)

INBOUND_PATH = re.compile(r"^/api/v1/inbound/(?P<system_slug>[-a-zA-Z0-9_]+)/(?P<event_type>[^/]+)/$")
VIEW_NAME = "sync-inbound-webhook"
JSON_CONTENT_TYPE = "application/json"


@dataclass
class InboundAnswer:
    status: int
    body: dict[str, Any]
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def inbound_answer(
    *,
    system_slug: str,
    event_type: str,
    headers: Mapping[str, str],
    content_length: str | None,
    read_body: Callable[[], bytes],
    correlation_id: str,
) -> InboundAnswer:
    """Store one webhook: 202 stored, 200 duplicate, 4xx problem+json naming the fields at fault, 503 with
    Retry-After when the database does not answer (nothing stored in either). `headers` must have lower-case
    names; the body is read only once its declared size is known to be within the limit."""
    bind_correlation_id(correlation_id)
    try:
        declared = int(content_length or 0)
    except ValueError:
        declared = 0
    try:
        if declared > max_body_bytes():
            raise PayloadTooLargeError(
                f"The body has {declared} bytes; the limit is {max_body_bytes()}.",
                hint="Send large data sets as a file drop or page them into several events.",
            )
        result = message_ingest(
            system_slug=system_slug,
            event_type=event_type,
            headers=headers,
            body=read_body(),
            correlation_id=correlation_id,
        )
    except HubError as error:
        answer = InboundAnswer(
            status=error.status,
            body=problem(
                status=error.status,
                title=error.title,
                detail=error.detail,
                code=error.code,
                errors=error.errors,
                hint=error.hint,
            ),
            content_type=PROBLEM_CONTENT_TYPE,
        )
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            answer.headers["Retry-After"] = str(retry_after)
        return answer
    body = {"message_id": result.message_id, "correlation_id": result.correlation_id}
    if result.duplicate:
        return InboundAnswer(status=200, body={**body, "duplicate": True})
    return InboundAnswer(status=202, body=body)


def security_headers(*, secure: bool) -> list[tuple[str, str]]:
    """The headers Django's security, clickjacking and CSP middleware add to a JSON answer."""
    headers: list[tuple[str, str]] = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if getattr(settings, "X_FRAME_OPTIONS", ""):
        headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    csp = getattr(settings, "HUB_CONTENT_SECURITY_POLICY", "")
    if csp:
        headers.append(("Content-Security-Policy", csp))
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    return headers


def _is_secure(environ: Mapping[str, Any]) -> bool:
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, value = proxy
        return environ.get(header, "").split(",")[0].strip() == value
    return environ.get("wsgi.url_scheme") == "https"


def _host_allowed(environ: Mapping[str, Any]) -> bool:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _headers_of(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")}
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


class InboundWebhookApplication:
    """WSGI application: answers POST /api/v1/inbound/<system-slug>/<event-type>/ itself, the rest goes to
    `django_application`."""

    def __init__(self, django_application: Callable[..., Iterable[bytes]]) -> None:
        self.django_application = django_application

    def handles(self, environ: Mapping[str, Any]) -> re.Match[str] | None:
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        match = INBOUND_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or not _host_allowed(environ):
            return None
        query = environ.get("QUERY_STRING", "")
        if "%00" in query or "\x00" in query:
            return None  # Django's body-limit middleware answers that one
        if settings.SECURE_SSL_REDIRECT and not _is_secure(environ):
            return None  # Django redirects it
        return match

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = self.handles(environ)
        if match is None:
            return self.django_application(environ, start_response)
        started = time.perf_counter()
        signals.request_started.send(sender=self.__class__, environ=environ)
        headers = _headers_of(environ)
        correlation_id = correlation_id_from_headers(headers) or new_correlation_id()
        try:
            answer = inbound_answer(
                system_slug=match["system_slug"],
                event_type=match["event_type"],
                headers=headers,
                content_length=environ.get("CONTENT_LENGTH"),
                read_body=lambda: environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)),
                correlation_id=correlation_id,
            )
        except Exception:  # the answer to an unexpected error, as Django's handler would give it
            logger.exception("unhandled error in the inbound webhook")
            body = problem(
                status=500,
                title="Internal error",
                detail="The hub could not store the event because of an internal error; nothing was stored.",
                code="internal_error",
                hint=f"Resend the event; if it keeps failing, give the administrator correlation id {correlation_id}.",
            )
            answer = InboundAnswer(status=500, body=body, content_type=PROBLEM_CONTENT_TYPE)
        finally:
            signals.request_finished.send(sender=self.__class__)
        data = json.dumps(answer.body).encode()
        response_headers = [
            ("Content-Type", answer.content_type),
            ("Content-Length", str(len(data))),
            (CORRELATION_HEADER, correlation_id),
            *answer.headers.items(),
            *security_headers(secure=_is_secure(environ)),
        ]
        start_response(f"{answer.status} {HTTPStatus(answer.status).phrase}", response_headers)
        from integrationhub.counters import LATENCY, REQUESTS

        LATENCY.labels(view=VIEW_NAME, method="POST").observe(time.perf_counter() - started)
        REQUESTS.labels(view=VIEW_NAME, method="POST", status=str(answer.status)).inc()
        return [data]
