"""Outbound HTTP for connectors: one pooled httpx client per system, correlation ids, one log line per call.

Every call goes through a client from `client_for(system)`. The client keeps connections alive (a
delivery worker talks to the same few systems all day), always has a timeout, stamps the request with
the current correlation id and logs one structured line per call: method, path, status and duration,
never a header value or a body. `classify_error` turns a failed call into the hub's two failure kinds:
retryable (timeouts, connection errors, 429, 5xx) or terminal (every other 4xx).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache

from integrationhub.errors import HubError
from integrationhub.logging import CORRELATION_HEADER, current_correlation_id

logger = logging.getLogger(__name__)

# The timeout of the calls made inside `call_timeout(...)`: the transport binds the flow's sync policy timeout
# around a connector operation, so every HTTP call the operation makes obeys it. A call's own timeout wins.
_call_timeout: ContextVar[float | None] = ContextVar("hub_call_timeout", default=None)


@contextmanager
def call_timeout(seconds: float | None) -> Iterator[None]:
    """Calls made within use `seconds` as their timeout (None: the system's own setting)."""
    token = _call_timeout.set(float(seconds) if seconds else None)
    try:
        yield
    finally:
        _call_timeout.reset(token)


def current_call_timeout() -> float | None:
    return _call_timeout.get()


DEFAULT_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
KEEPALIVE_EXPIRY_SECONDS = 30.0
# A token is refreshed this long before the provider says it expires, so a call never races the expiry.
TOKEN_REFRESH_MARGIN_SECONDS = 60
USER_AGENT = "IntegrationHub/1.0"


class ConnectorError(HubError):
    """A call to a connected system failed; `retryable` says whether trying again later can help."""

    status = 502
    code = "connector_error"
    title = "The connected system call failed"
    retryable = False

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        system_slug: str = "",
        retry_after: float | None = None,
        hint: str = "",
    ) -> None:
        super().__init__(detail, hint=hint)
        self.status_code = status_code
        self.system_slug = system_slug
        self.retry_after = retry_after


class RetryableConnectorError(ConnectorError):
    """Timeout, connection failure, 429 or 5xx: the same call may succeed later."""

    status = 503
    code = "connector_retryable"
    title = "The connected system is unavailable; the call can be retried"
    retryable = True


class TerminalConnectorError(ConnectorError):
    """Any other 4xx (or an answer the hub cannot use): retrying the same call will fail the same way."""

    status = 502
    code = "connector_terminal"
    title = "The connected system rejected the call"
    retryable = False


class TargetRecordGoneError(TerminalConnectorError):
    """An update found no record at the id the hub holds for it (deleted at the target): a person decides
    whether to re-create it or to leave it gone; the hub never re-creates it by itself."""

    code = "target_record_gone"
    title = "The record is gone at the target"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        # The HTTP-date form is rare for APIs; the retry policy's own backoff applies instead.
        return None


# What a counterpart said when it refused a call, shown to the person who has to fix it: at most this much of
# its body, with anything that looks like a secret removed (the excerpt lands in attempt rows, items and logs).
ANSWER_EXCERPT_CHARS = 300
ANSWER_READ_BYTES = 8192
SECRET_KEY_PATTERN = re.compile(
    r"token|secret|password|passwd|pwd|authori[sz]ation|api[-_]?key|credential|session|cookie|signature|bearer",
    re.IGNORECASE,
)
REMOVED = "[removed]"
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b(access[-_]?token|refresh[-_]?token|id[-_]?token|token|secret|client[-_]?secret|password|passwd|pwd|"
    r"api[-_]?key|apikey|authorization|signature|session(?:id)?)\b(\s*[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;}]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_OPAQUE = re.compile(r"[A-Za-z0-9_\-]{32,}(?:\.[A-Za-z0-9_\-]+){0,2}")
_TAGS = re.compile(r"<[^>]+>")


def _sanitised(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REMOVED if SECRET_KEY_PATTERN.search(str(key)) else _sanitised(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_sanitised(item) for item in value]
    if isinstance(value, str):
        return _sanitised_text(value)
    return value


def _sanitised_text(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REMOVED}", text)
    text = _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REMOVED}", text)
    return _OPAQUE.sub(REMOVED, text)


def answer_excerpt(response: httpx.Response) -> str:
    """A short, secret-free excerpt of a refusal's body: JSON without the values of secret-looking keys (and
    long opaque strings such as tokens), or text without markup; empty when the body is empty or binary."""
    try:
        raw = response.content[:ANSWER_READ_BYTES]
    except httpx.ResponseNotRead:
        return ""
    if not raw:
        return ""
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        if "\x00" in text:
            return ""
        compact = " ".join(html.unescape(_TAGS.sub(" ", text)).split())
        excerpt = _sanitised_text(compact)
    else:
        excerpt = json.dumps(_sanitised(parsed), ensure_ascii=False, separators=(", ", ": "))
    return excerpt if len(excerpt) <= ANSWER_EXCERPT_CHARS else excerpt[: ANSWER_EXCERPT_CHARS - 1] + "…"


def classify_error(error: httpx.Response | httpx.HTTPError, *, system_slug: str = "") -> ConnectorError:
    """Map a failed response or transport error to RetryableConnectorError or TerminalConnectorError. A refusal's
    detail ends with what the counterpart answered (a sanitised excerpt), so the item says what to fix."""
    where = f" from {system_slug}" if system_slug else ""
    if isinstance(error, httpx.Response):
        status = error.status_code
        reason = error.reason_phrase or "error"
        path = error.request.url.path if error.request else ""
        detail = f"HTTP {status} {reason}{where} on {path}"
        excerpt = answer_excerpt(error)
        if excerpt:
            detail = f"{detail}; it answered: {excerpt}"
        if status == 429:
            return RetryableConnectorError(
                detail,
                status_code=status,
                system_slug=system_slug,
                retry_after=_retry_after_seconds(error),
                hint="The system is rate limiting the hub; lower its rate budget if this repeats.",
            )
        if status >= 500:
            return RetryableConnectorError(
                detail, status_code=status, system_slug=system_slug, retry_after=_retry_after_seconds(error)
            )
        hint = ""
        if status in (401, 403):
            hint = "Check the system's credentials and the permissions of the account the hub uses."
        return TerminalConnectorError(detail, status_code=status, system_slug=system_slug, hint=hint)
    if isinstance(error, httpx.TimeoutException):
        return RetryableConnectorError(f"Timed out{where}: {type(error).__name__}", system_slug=system_slug)
    if isinstance(error, (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)):
        return RetryableConnectorError(
            f"Could not reach the system{where}: {type(error).__name__}",
            system_slug=system_slug,
            hint="Check the base URL and that the system is running and reachable from the hub.",
        )
    if isinstance(error, httpx.HTTPStatusError):
        return classify_error(error.response, system_slug=system_slug)
    return TerminalConnectorError(f"Invalid request{where}: {type(error).__name__}", system_slug=system_slug)


def raise_for_status(response: httpx.Response, *, system_slug: str = "") -> httpx.Response:
    """Return the response if it is 2xx/3xx, else raise the classified connector error."""
    if response.status_code >= 400:
        raise classify_error(response, system_slug=system_slug)
    return response


# --- auth helpers ---------------------------------------------------------------------------------


class ApiKeyAuth(httpx.Auth):
    """Sends an API key in a header (X-API-Key unless the connector says otherwise)."""

    def __init__(self, key: str, header: str = "X-API-Key") -> None:
        self._key = key
        self._header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._key
        yield request


class BearerAuth(httpx.Auth):
    """Sends a static bearer token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def basic_auth(username: str, password: str) -> httpx.Auth:
    """HTTP basic auth."""
    return httpx.BasicAuth(username, password)


class OAuth2ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials grant with the token cached in Django's cache until shortly before it expires.

    The cache is shared by the web process and every worker, so one token serves them all. A 401 on a
    call drops the cached token and retries the call once with a fresh one (the token may have been
    revoked early).
    """

    requires_response_body = True

    def __init__(
        self, *, token_url: str, client_id: str, client_secret: str, scope: str = "", cache_namespace: str = ""
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        # The key names the system and a digest of the client id and URL, never the secret itself.
        digest = hashlib.sha256(f"{token_url}|{client_id}|{scope}".encode()).hexdigest()[:16]
        self.cache_key = f"hub:oauth2-token:{cache_namespace}:{digest}"

    def _token_request(self, system_slug: str) -> httpx.Request:
        data = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}
        if self._scope:
            data["scope"] = self._scope
        return httpx.Request(
            "POST",
            self._token_url,
            data=data,
            headers={"Accept": "application/json"},
            extensions={"hub_system_slug": system_slug},
        )

    def _store(self, response: httpx.Response, system_slug: str) -> str:
        if response.status_code >= 400:
            raise classify_error(response, system_slug=system_slug)
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TerminalConnectorError(
                "The token endpoint answered without an access_token", system_slug=system_slug
            ) from exc
        expires_in = int(body.get("expires_in") or 3600)
        ttl = max(1, expires_in - TOKEN_REFRESH_MARGIN_SECONDS)
        cache.set(self.cache_key, token, timeout=ttl)
        return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        slug = request.extensions.get("hub_system_slug", "")
        token = cache.get(self.cache_key)
        if not token:
            token = self._store((yield self._token_request(slug)), slug)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            cache.delete(self.cache_key)
            token = self._store((yield self._token_request(slug)), slug)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


# --- the pooled client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """What identifies a pooled client: a change to any of these builds a new one."""

    system_id: int | None
    system_slug: str
    base_url: str
    timeout: float
    max_connections: int


def _log_request(request: httpx.Request) -> None:
    request.extensions["hub_started"] = time.perf_counter()


def _log_response(response: httpx.Response) -> None:
    request = response.request
    started = request.extensions.get("hub_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    # The path only: query strings can carry tokens (api_key=..., signature=...), so only their names are kept.
    logger.info(
        "connector call",
        extra={
            "system": request.extensions.get("hub_system_slug", ""),
            "method": request.method,
            "path": request.url.path,
            "query_keys": sorted({key for key, _ in request.url.params.multi_items()}),
            "status": response.status_code,
            "duration_ms": duration_ms,
        },
    )


class SystemHttpClient:
    """A keep-alive httpx client bound to one connected system; use `request()` for every call."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._client = httpx.Client(
            base_url=config.base_url,
            timeout=httpx.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT_SECONDS, config.timeout)),
            limits=httpx.Limits(
                max_connections=config.max_connections,
                max_keepalive_connections=config.max_connections,
                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            ),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            event_hooks={"request": [_log_request], "response": [_log_response]},
            trust_env=getattr(settings, "HUB_HTTP_TRUST_ENV", True),
            follow_redirects=False,
        )

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        auth: httpx.Auth | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> httpx.Response:
        """Send one call; with `check` a 4xx/5xx or transport failure raises the classified connector error."""
        slug = self.config.system_slug
        merged = dict(headers or {})
        correlation_id = current_correlation_id()
        if correlation_id:
            merged[CORRELATION_HEADER] = correlation_id
        if timeout is None:
            timeout = _call_timeout.get()
        started = time.perf_counter()
        try:
            response = self._client.request(
                method,
                path,
                auth=auth or httpx.USE_CLIENT_DEFAULT,
                headers=merged,
                params=params,
                json=json,
                data=data,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                extensions={"hub_system_slug": slug},
            )
        except httpx.HTTPError as exc:
            # No response means no response hook ran: log the failed call here, still without secrets.
            logger.warning(
                "connector call failed",
                extra={
                    "system": slug,
                    "method": method.upper(),
                    "path": httpx.URL(path).path,
                    "status": None,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    "error": type(exc).__name__,
                },
            )
            raise classify_error(exc, system_slug=slug) from exc
        if check:
            raise_for_status(response, system_slug=slug)
        return response


_clients: dict[int | str, SystemHttpClient] = {}
_clients_lock = threading.Lock()


def client_for(system: Any, *, timeout: float | None = None) -> SystemHttpClient:
    """The shared pooled client of a system; rebuilt when its base URL, timeout or concurrency changes."""
    config = ClientConfig(
        system_id=system.pk,
        system_slug=system.slug,
        base_url=system.base_url.rstrip("/"),
        timeout=float(timeout or (system.settings or {}).get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
        max_connections=max(1, int(system.max_concurrency or 1)),
    )
    key = system.pk if system.pk is not None else f"unsaved:{system.slug}"
    with _clients_lock:
        client = _clients.get(key)
        if client is not None and client.config == config and not client.is_closed:
            return client
        if client is not None:
            client.close()
        client = SystemHttpClient(config)
        _clients[key] = client
        return client


def clients_close() -> None:
    """Close every pooled client (tests, and worker shutdown)."""
    with _clients_lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
